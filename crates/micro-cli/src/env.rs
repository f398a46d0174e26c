//! The configuration, chosen exactly as a service chooses it: the `MICRO_*`
//! variables ([`micro_core::Config::from_lookup`]), each overridden by the flag of
//! the same name.

use std::sync::Arc;

use micro_core::broker::Broker;
use micro_core::registry::{Node, Registry};
use micro_core::transport::TcpTransport;
use micro_core::{Client, Config};

use crate::args::Global;
use crate::exit::CliError;

/// The flag each variable can be overridden by, and its value.
fn overrides(global: &Global) -> [(&'static str, Option<&str>); 5] {
    [
        ("MICRO_REGISTRY", global.registry.as_deref()),
        ("MICRO_REGISTRY_ADDRESS", global.registry_address.as_deref()),
        ("MICRO_MDNS_INTERFACES", global.mdns_interfaces.as_deref()),
        ("MICRO_BROKER", global.broker.as_deref()),
        ("MICRO_BROKER_ADDRESS", global.broker_address.as_deref()),
    ]
}

/// The configuration: a flag's value where it is given, else the environment's.
/// A value that is not usable is a [`CliError::Config`] naming it.
pub fn config(global: &Global) -> Result<Config, CliError> {
    let flags = overrides(global);
    Config::from_lookup(|name| {
        if let Some((_, Some(value))) = flags.iter().find(|(key, _)| *key == name) {
            return Some((*value).to_string());
        }
        std::env::var(name).ok()
    })
    .map_err(|e| {
        // Name the flag too when the bad value came from one.
        let text = e.to_string();
        match flags
            .iter()
            .find(|(key, value)| value.is_some() && text.contains(key))
        {
            Some((key, _)) => CliError::Config(format!(
                "{text} (from --{})",
                key.trim_start_matches("MICRO_").to_lowercase()
            )),
            None => CliError::Config(text),
        }
    })
}

/// The registry the configuration names.
pub fn registry(config: &Config) -> Result<Arc<dyn Registry>, CliError> {
    config
        .registry
        .build()
        .map_err(|e| CliError::Config(e.to_string()))
}

/// A client over `registry`, with the default options, over TCP.
pub fn client(registry: Arc<dyn Registry>) -> Client {
    Client::new(registry, Arc::new(TcpTransport::default()))
}

/// A client that reaches `service` only at `address`, whatever the registry says:
/// a registry of one node, in memory.
pub async fn client_at(service: &str, address: &str) -> Result<Client, CliError> {
    let memory = micro_core::registry::MemoryRegistry::new();
    let record =
        micro_core::registry::Service::new(service).node(Node::new(address.to_string(), address));
    memory
        .register(&record, Default::default())
        .await
        .map_err(|e| CliError::Config(format!("--address {address}: {e}")))?;
    Ok(client(Arc::new(memory)))
}

/// The broker the configuration names, over `registry`, connected.
pub async fn broker(
    config: &Config,
    registry: Arc<dyn Registry>,
) -> Result<Arc<dyn Broker>, CliError> {
    let broker = micro_core::broker::build(config, registry, Arc::new(TcpTransport::default()));
    broker.connect().await?;
    Ok(broker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_bad_values_name_their_flag() {
        let global = Global {
            registry: Some("memory".into()),
            broker: Some("memory".into()),
            ..Global::default()
        };
        let config = config(&global).map_err(|e| e.to_string());
        assert!(config.is_ok(), "{config:?}");
        let bad = Global {
            registry: Some("zookeeper".into()),
            ..Global::default()
        };
        let err = super::config(&bad)
            .err()
            .map(|e| (e.exit_code(), e.to_string()));
        let (code, text) = err.unwrap_or_default();
        assert_eq!(code, crate::exit::USAGE);
        assert!(
            text.contains("zookeeper") && text.contains("--registry"),
            "{text}"
        );
    }
}
