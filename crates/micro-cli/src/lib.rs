//! The `micro` command: list, describe, call, stream, health-check and watch services,
//! and publish and subscribe to events, from a terminal.
//!
//! The registry and broker are chosen exactly as a service chooses them
//! ([`micro_core::Config`]: `MICRO_REGISTRY`, `MICRO_REGISTRY_ADDRESS`,
//! `MICRO_MDNS_INTERFACES`, `MICRO_BROKER`, `MICRO_BROKER_ADDRESS`), each overridden by
//! the flag of the same name (`--registry etcd --registry_address 127.0.0.1:2379`;
//! `--registry-address` works too).
//!
//! Methods are named as go-micro names them, `Service.Method`, and called at
//! `/<registry name>.<Service>/<Method>` (go-micro's gRPC client's rule; micro's
//! servers route on `Service/Method` whatever the package), or by a full gRPC path
//! (`/package.Service/Method`). See [`micro_core::client::endpoint_path`].
//!
//! Exit codes: see [`exit`]. The binary is a thin `main` over [`run`].

pub mod api;
pub mod args;
pub mod call;
pub mod env;
pub mod events;
pub mod exit;
pub mod health;
pub mod output;
pub mod registry;

use args::{Cli, Command};
use exit::CliError;

/// Resolves when the process is asked to stop (Ctrl-C, or SIGTERM on Unix).
pub async fn interrupted() {
    micro_core::shutdown_signal().await;
}

/// Runs one command; the error carries its exit code ([`CliError::exit_code`]).
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = env::config(&cli.global)?;
    let output = cli.global.output;
    match cli.command {
        Command::Api(args) => {
            let client = env::client(env::registry(&config)?);
            api::run(&args, client)
                .await
                .map_err(|e| CliError::Io(std::io::Error::other(e.to_string())))
        }
        Command::Services => registry::services(&env::registry(&config)?, output).await,
        Command::Describe { service } => {
            registry::describe(&env::registry(&config)?, &service, output).await
        }
        Command::Watch { service } => {
            registry::watch(&env::registry(&config)?, service, output).await
        }
        Command::Call(args) => call::call(env::registry(&config)?, args).await,
        Command::Stream(args) => call::stream(env::registry(&config)?, args).await,
        Command::Health { service, timeout } => {
            health::health(env::registry(&config)?, service, timeout, output).await
        }
        Command::Publish {
            topic,
            message,
            timeout,
        } => {
            let broker = env::broker(&config, env::registry(&config)?).await?;
            events::publish(broker, &topic, message, timeout).await
        }
        Command::Subscribe { topic, queue } => {
            let broker = env::broker(&config, env::registry(&config)?).await?;
            events::subscribe(broker, &topic, queue, output).await
        }
    }
}
