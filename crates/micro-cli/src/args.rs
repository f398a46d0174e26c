//! The command line: global flags (registry, broker, output) and the commands.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The `micro` command: list, describe, call, stream, health-check and watch services,
/// and publish and subscribe to events, through the registry and broker services use.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, long_about = None)]
pub struct Cli {
    /// Registry, broker and output.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes. Each overrides the environment variable of the same name.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// The registry: mdns (default), memory, etcd. Overrides MICRO_REGISTRY.
    #[arg(long, global = true, value_name = "NAME")]
    pub registry: Option<String>,
    /// The registry's servers, host:port (comma-separated). Overrides MICRO_REGISTRY_ADDRESS.
    #[arg(
        long = "registry_address",
        alias = "registry-address",
        global = true,
        value_name = "ADDRESS"
    )]
    pub registry_address: Option<String>,
    /// The interfaces mDNS uses: all, loopback, or names. Overrides MICRO_MDNS_INTERFACES.
    #[arg(
        long = "mdns_interfaces",
        alias = "mdns-interfaces",
        global = true,
        value_name = "INTERFACES"
    )]
    pub mdns_interfaces: Option<String>,
    /// The broker: registry (default), memory, nats. Overrides MICRO_BROKER.
    #[arg(long, global = true, value_name = "NAME")]
    pub broker: Option<String>,
    /// The broker's address (NATS servers). Overrides MICRO_BROKER_ADDRESS.
    #[arg(
        long = "broker_address",
        alias = "broker-address",
        global = true,
        value_name = "ADDRESS"
    )]
    pub broker_address: Option<String>,
    /// Output for people (aligned tables) or for scripts (JSON; JSON lines for streams).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How listings are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables, coloured on a terminal.
    #[default]
    Text,
    /// JSON (one document; JSON lines for `watch` and `subscribe`).
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lists the services in the registry: name, versions, node counts.
    Services,
    /// Shows every version, node and endpoint of a service.
    Describe {
        /// The service's registry name (go.micro.srv.vessel).
        service: String,
    },
    /// Calls a unary method with JSON and prints the JSON reply.
    Call(CallArgs),
    /// Calls a streaming method: JSON lines on stdin out, JSON lines of replies on stdout.
    Stream(StreamArgs),
    /// Checks every node of a service (or of every service) with grpc.health.v1.
    Health {
        /// The service; every service when left out.
        service: Option<String>,
        /// How long each check may take.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Prints registry events as they happen, until interrupted.
    Watch {
        /// Only this service's events.
        service: Option<String>,
    },
    /// Publishes a JSON message on a topic through the broker.
    Publish {
        /// The topic (consignment.created).
        topic: String,
        /// The message, JSON; read from stdin when left out.
        message: Option<String>,
        /// How long publishing may take.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Prints the messages published on a topic, until interrupted.
    Subscribe {
        /// The topic.
        topic: String,
        /// A queue group: each message goes to one member.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Serves an HTTP/JSON gateway to the services.
    Api(crate::api::ApiArgs),
}

/// Where a call goes and how.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Metadata sent with the call, key=value (or key:value); repeatable.
    #[arg(short = 'm', long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata)]
    pub metadata: Vec<(String, String)>,
    /// How long the call may take (5s, 500ms, 1m). Default: 30s for a call, none for a stream.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Call only the node with this registry id.
    #[arg(long, conflicts_with = "address")]
    pub node: Option<String>,
    /// Call this address (host:port) directly, without the registry.
    #[arg(long)]
    pub address: Option<String>,
}

/// `micro call`.
#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// The service's registry name.
    pub service: String,
    /// The method: Service.Method (VesselService.FindAvailable) or /package.Service/Method.
    pub endpoint: String,
    /// The JSON request; read from stdin when left out ({} when stdin is a terminal).
    pub request: Option<String>,
    /// Where the call goes and how.
    #[command(flatten)]
    pub target: Target,
}

/// `micro stream`.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// The service's registry name.
    pub service: String,
    /// The method: Service.Method or /package.Service/Method.
    pub endpoint: String,
    /// Where the stream goes and how.
    #[command(flatten)]
    pub target: Target,
}

/// Reads `5s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 5s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 * 365.0 {
        return Err(format!("{text:?}: expected a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Reads `key=value` or `key:value`.
pub fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| format!("{text:?}: expected key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{text:?}: the key is empty"));
    }
    Ok((key.to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_metadata_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(
            parse_metadata("x-user=alice"),
            Ok(("x-user".into(), "alice".into()))
        );
        assert_eq!(parse_metadata("k:v"), Ok(("k".into(), "v".into())));
        assert!(parse_metadata("novalue").is_err());
    }

    #[test]
    fn flags_parse_in_both_spellings() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "micro",
            "--registry",
            "etcd",
            "--registry_address",
            "127.0.0.1:2379",
            "services",
        ])
        .map_err(|e| e.to_string());
        assert!(cli.is_ok(), "{cli:?}");
        let cli = Cli::try_parse_from(["micro", "services", "--registry-address", "a:1"])
            .map_err(|e| e.to_string());
        assert_eq!(
            cli.ok().and_then(|c| c.global.registry_address).as_deref(),
            Some("a:1")
        );
    }
}
