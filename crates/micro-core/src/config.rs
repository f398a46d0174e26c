//! A service's configuration, read from the environment once (go-micro's variable
//! names) and overridden by builders. Nothing else in micro reads the environment
//! but for the `OTEL_*` variables of the traces (feature `otel`), read by
//! [`Telemetry::from_env`](crate::telemetry) and the OpenTelemetry SDK.
//!
//! | variable | what | default |
//! |---|---|---|
//! | `MICRO_SERVER_ADDRESS` | where to listen (`:50051`, `127.0.0.1:0`) | every interface, a free port |
//! | `MICRO_SERVER_ADVERTISE` | the address to announce instead of the bound one | the bound address, never a wildcard |
//! | `MICRO_REGISTER_INTERVAL` | seconds between re-registrations | 30 |
//! | `MICRO_REGISTER_TTL` | seconds a registration lives | 90 |
//! | `MICRO_REGISTRY` | `mdns`, `memory`, `etcd` (feature `etcd`) | `mdns` |
//! | `MICRO_REGISTRY_ADDRESS` | the registry's servers, `host:port[,host:port]` | etcd: `127.0.0.1:2379` |
//! | `MICRO_MDNS_INTERFACES` | `all`, `loopback`, or interface names | `all` |
//! | `MICRO_BROKER` | `registry`, `memory`, `nats` (feature `nats`) | `registry` |
//! | `MICRO_BROKER_ADDRESS` | NATS servers, or where the registry broker listens | NATS: `nats://127.0.0.1:4222` |
//! | `MICRO_LOG_LEVEL` | `trace`, `debug`, `info`, `warn`, `error`, `fatal` | `info` |
//! | `RUST_LOG` | `tracing` filter directives; wins over `MICRO_LOG_LEVEL` | |
//! | `MICRO_METRICS_ADDRESS` | where to serve Prometheus metrics on `GET /metrics`, `host:port` or `:port` (feature `metrics`; without it, setting this is an error) | not served |
//!
//! The two log variables only shape the log micro sets up when the program set up
//! none (see [`crate::log`]).

use std::time::Duration;

use micro_registry::RegistryConfig;

/// Environment variable with the address to listen on (`:50051`, `127.0.0.1:0`).
pub const ENV_SERVER_ADDRESS: &str = "MICRO_SERVER_ADDRESS";
/// Environment variable with the address to announce instead of the bound one.
pub const ENV_SERVER_ADVERTISE: &str = "MICRO_SERVER_ADVERTISE";
/// Environment variable: seconds between re-registrations (go-micro's `MICRO_REGISTER_INTERVAL`).
pub const ENV_REGISTER_INTERVAL: &str = "MICRO_REGISTER_INTERVAL";
/// Environment variable: seconds a registration lives (go-micro's `MICRO_REGISTER_TTL`).
pub const ENV_REGISTER_TTL: &str = "MICRO_REGISTER_TTL";
/// Environment variable naming the broker: `registry` (default), `memory`, `nats`.
pub const ENV_BROKER: &str = "MICRO_BROKER";
/// Environment variable with the broker's address: the NATS servers
/// (`nats://host:port[,..]`), or where the registry broker listens.
pub const ENV_BROKER_ADDRESS: &str = "MICRO_BROKER_ADDRESS";
/// Environment variable with go-micro's log level: `trace`, `debug`, `info`, `warn`,
/// `error`, `fatal`.
pub const ENV_LOG_LEVEL: &str = "MICRO_LOG_LEVEL";
/// Environment variable with `tracing` filter directives (`info,micro_core=debug`).
pub const ENV_RUST_LOG: &str = "RUST_LOG";
/// Environment variable with the address to serve Prometheus metrics on
/// (`GET /metrics`): `host:port`, or `:port` for every interface. Needs micro-core's
/// feature `metrics`; without it, setting the variable is a configuration error.
pub const ENV_METRICS_ADDRESS: &str = "MICRO_METRICS_ADDRESS";
/// How often a running service registers again (go-micro's default).
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// How long a registration lives unless renewed (go-micro's default).
pub const DEFAULT_REGISTER_TTL: Duration = Duration::from_secs(90);

/// A setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable (or a builder value) with a value that is not usable.
    #[error("{variable}={value:?}: {reason}")]
    Invalid {
        /// The environment variable, or the builder option.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry's settings (the error names the variable and value).
    #[error(transparent)]
    Registry(#[from] micro_registry::Error),
}

impl ConfigError {
    /// `variable` has a `value` that is not usable, because `reason`.
    pub fn invalid(
        variable: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            variable: variable.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Which broker events go through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerKind {
    /// Subscriptions are registry nodes, deliveries gRPC calls: no server (default).
    #[default]
    Registry,
    /// One process only; for tests.
    Memory,
    /// NATS servers (feature `nats`).
    Nats,
}

/// The broker's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Which broker.
    pub kind: BrokerKind,
    /// NATS: the servers (`nats://host:port`, comma-separated); registry broker: where
    /// its endpoint listens. `None`: the default.
    pub address: Option<String>,
}

/// Everything a [`Service`](crate::Service) reads from the environment, in one value.
///
/// ```
/// use std::time::Duration;
/// use micro_core::Config;
/// use micro_core::registry::RegistryKind;
///
/// let mut config = Config::default(); // or Config::from_env()?
/// config.registry.kind = RegistryKind::Memory;
/// config.register_ttl = Duration::from_secs(10);
/// config.register_interval = Duration::from_secs(3);
/// assert_eq!(config.server_address, "");
/// # Ok::<(), micro_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen: empty for every interface and a free port; `:50051`.
    pub server_address: String,
    /// The address to announce instead of the bound one.
    pub advertise: Option<String>,
    /// How often the service registers again.
    pub register_interval: Duration,
    /// How long each registration lives.
    pub register_ttl: Duration,
    /// The registry.
    pub registry: RegistryConfig,
    /// The broker.
    pub broker: BrokerConfig,
    /// What the log micro installs when the program installed none shows: `tracing`
    /// filter directives; `None` for [`crate::log::DEFAULT_FILTER`].
    pub log_filter: Option<String>,
    /// Where to serve Prometheus metrics (`host:port`, `:port`); `None`: not served.
    /// See [`ENV_METRICS_ADDRESS`].
    pub metrics_address: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_address: String::new(),
            advertise: None,
            register_interval: DEFAULT_REGISTER_INTERVAL,
            register_ttl: DEFAULT_REGISTER_TTL,
            registry: RegistryConfig::default(),
            broker: BrokerConfig::default(),
            log_filter: None,
            metrics_address: None,
        }
    }
}

impl Config {
    /// Reads every variable in the table above; the first one that is not usable is
    /// the error, naming the variable and its value.
    pub fn from_env() -> Result<Self, ConfigError> {
        let registry = RegistryConfig::from_env()?;
        let mut values = std::collections::HashMap::new();
        for key in [
            ENV_SERVER_ADDRESS,
            ENV_SERVER_ADVERTISE,
            ENV_REGISTER_INTERVAL,
            ENV_REGISTER_TTL,
            ENV_BROKER,
            ENV_BROKER_ADDRESS,
            ENV_LOG_LEVEL,
            ENV_RUST_LOG,
            ENV_METRICS_ADDRESS,
        ] {
            if let Some(value) = std::env::var_os(key) {
                let value = value.into_string().map_err(|raw| {
                    ConfigError::invalid(key, raw.to_string_lossy(), "not valid UTF-8")
                })?;
                values.insert(key, value);
            }
        }
        Self::from_vars(|key| values.get(key).cloned()).map(|config| Self { registry, ..config })
    }

    /// [`Config::from_env`] on variables looked up by `get` instead of the
    /// environment (the registry's `MICRO_REGISTRY*` and `MICRO_MDNS_INTERFACES`
    /// included): what a command-line tool uses to let its flags override the
    /// environment. A variable `get` does not give takes its default.
    ///
    /// ```
    /// use micro_core::Config;
    /// use micro_core::config::BrokerKind;
    /// use micro_core::registry::RegistryKind;
    ///
    /// let vars = [("MICRO_REGISTRY", "memory"), ("MICRO_BROKER", "memory")];
    /// let get = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    /// let config = Config::from_lookup(get)?;
    /// assert_eq!(config.registry.kind, RegistryKind::Memory);
    /// assert_eq!(config.broker.kind, BrokerKind::Memory);
    /// assert!(Config::from_lookup(|name| (name == "MICRO_BROKER").then(|| "kafka".into())).is_err());
    /// # Ok::<(), micro_core::ConfigError>(())
    /// ```
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let registry = RegistryConfig::from_lookup(&get)?;
        Self::from_vars(get).map(|config| Self { registry, ..config })
    }

    /// micro-core's own variables, from `get` (the environment, or a test's map).
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let seconds = |key: &str, default: Duration| match get(key) {
            None => Ok(default),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
                _ => Err(ConfigError::invalid(
                    key,
                    value,
                    "expected a positive number of seconds",
                )),
            },
        };
        let register_interval = seconds(ENV_REGISTER_INTERVAL, DEFAULT_REGISTER_INTERVAL)?;
        let register_ttl = seconds(ENV_REGISTER_TTL, DEFAULT_REGISTER_TTL)?;
        if register_ttl <= register_interval {
            return Err(ConfigError::invalid(
                ENV_REGISTER_TTL,
                register_ttl.as_secs().to_string(),
                format!(
                    "must be longer than the register interval ({}s)",
                    register_interval.as_secs()
                ),
            ));
        }
        let broker_name = get(ENV_BROKER).unwrap_or_default();
        let kind = match broker_name.trim() {
            "" | "registry" | "http" => BrokerKind::Registry,
            "memory" => BrokerKind::Memory,
            "nats" if cfg!(feature = "nats") => BrokerKind::Nats,
            "nats" => {
                return Err(ConfigError::invalid(
                    ENV_BROKER,
                    broker_name,
                    "the NATS broker is not in this build: enable micro-core's feature `nats`",
                ));
            }
            _ => {
                return Err(ConfigError::invalid(
                    ENV_BROKER,
                    broker_name,
                    "unknown broker (known: registry, memory, nats)",
                ));
            }
        };
        let log_filter = log_filter(&get)?;
        let metrics_address = get(ENV_METRICS_ADDRESS).filter(|a| !a.trim().is_empty());
        if let Some(address) = &metrics_address {
            check_metrics_address(ENV_METRICS_ADDRESS, address)?;
        }
        Ok(Self {
            server_address: get(ENV_SERVER_ADDRESS).unwrap_or_default(),
            advertise: get(ENV_SERVER_ADVERTISE).filter(|a| !a.trim().is_empty()),
            register_interval,
            register_ttl,
            registry: RegistryConfig::default(),
            broker: BrokerConfig {
                kind,
                address: get(ENV_BROKER_ADDRESS).filter(|a| !a.trim().is_empty()),
            },
            log_filter,
            metrics_address,
        })
    }

    /// Checks what the builders may have set: the TTL outlives the interval.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if let Some(address) = &self.metrics_address {
            check_metrics_address("metrics_address", address)?;
        }
        if self.register_ttl <= self.register_interval {
            return Err(ConfigError::invalid(
                "register_ttl",
                format!("{:?}", self.register_ttl),
                format!(
                    "must be longer than the register interval ({:?})",
                    self.register_interval
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a metrics address: `host:port` or `:port`, in a build with metrics.
fn check_metrics_address(variable: &str, address: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| Err(ConfigError::invalid(variable, address, reason));
    if !cfg!(feature = "metrics") {
        return invalid("metrics are not in this build: enable micro-core's feature `metrics`");
    }
    let Some((host, port)) = address.trim().rsplit_once(':') else {
        return invalid("expected host:port or :port");
    };
    if port.parse::<u16>().is_err() {
        return invalid("expected host:port or :port, with a port from 0 to 65535");
    }
    if host.contains(char::is_whitespace)
        || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')))
    {
        return invalid("expected host:port or :port (an IPv6 host in brackets)");
    }
    Ok(())
}

/// `RUST_LOG` if set, else the directive for `MICRO_LOG_LEVEL`, each checked.
fn log_filter(get: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    if let Some(directives) = get(ENV_RUST_LOG).filter(|d| !d.trim().is_empty()) {
        crate::log::parse_filter(&directives)
            .map_err(|reason| ConfigError::invalid(ENV_RUST_LOG, directives.clone(), reason))?;
        return Ok(Some(directives));
    }
    match get(ENV_LOG_LEVEL).filter(|l| !l.trim().is_empty()) {
        None => Ok(None),
        Some(level) => match crate::log::level_directive(&level) {
            Some(directive) => Ok(Some(directive.to_string())),
            None => Err(ConfigError::invalid(
                ENV_LOG_LEVEL,
                level,
                "unknown level (known: trace, debug, info, warn, error, fatal)",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_vars(|key| map.get(key).cloned())
    }

    #[test]
    fn defaults_are_go_micros() {
        let config = from(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, Config::default());
        assert_eq!(config.register_ttl, Duration::from_secs(90));
        assert_eq!(config.broker.kind, BrokerKind::Registry);
    }

    #[test]
    fn values_are_read() {
        let config = from(&[
            (ENV_SERVER_ADDRESS, ":50051"),
            (ENV_SERVER_ADVERTISE, "10.0.0.5:50051"),
            (ENV_REGISTER_INTERVAL, "3"),
            (ENV_REGISTER_TTL, "10"),
            (ENV_BROKER, "memory"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.server_address, ":50051");
        assert_eq!(config.advertise.as_deref(), Some("10.0.0.5:50051"));
        assert_eq!(config.register_interval, Duration::from_secs(3));
        assert_eq!(config.broker.kind, BrokerKind::Memory);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let cases = [
            (
                vec![(ENV_REGISTER_TTL, "soon")],
                "MICRO_REGISTER_TTL=\"soon\"",
            ),
            (
                vec![(ENV_REGISTER_INTERVAL, "0")],
                "MICRO_REGISTER_INTERVAL=\"0\"",
            ),
            (
                vec![(ENV_REGISTER_INTERVAL, "100")],
                "MICRO_REGISTER_TTL=\"90\": must be longer",
            ),
            (
                vec![(ENV_BROKER, "kafka")],
                "MICRO_BROKER=\"kafka\": unknown broker",
            ),
            (
                vec![(ENV_LOG_LEVEL, "loud")],
                "MICRO_LOG_LEVEL=\"loud\": unknown level",
            ),
            (vec![(ENV_RUST_LOG, "micro_core=verbose")], "RUST_LOG=\""),
        ];
        for (pairs, expected) in cases {
            let err = from(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn metrics_address_is_checked() {
        let bad = ["9090", "localhost:http", "host:70000", "::1:9090", "a b:1"];
        for value in bad {
            let err = from(&[(ENV_METRICS_ADDRESS, value)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with(&format!("MICRO_METRICS_ADDRESS={value:?}: ")),
                "{value}: {err}"
            );
        }
        for good in ["127.0.0.1:9090", ":9464", "[::1]:0", "localhost:9090"] {
            let read = from(&[(ENV_METRICS_ADDRESS, good)]).map(|c| c.metrics_address);
            if cfg!(feature = "metrics") {
                assert_eq!(read, Ok(Some(good.to_string())));
            } else {
                let err = read.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(err.contains("feature `metrics`"), "{err}");
            }
        }
        assert_eq!(from(&[]).map(|c| c.metrics_address), Ok(None));
    }

    #[test]
    fn rust_log_wins_over_micro_log_level() {
        let both = from(&[(ENV_LOG_LEVEL, "fatal"), (ENV_RUST_LOG, "warn,h2=off")]);
        assert_eq!(
            both.map(|c| c.log_filter),
            Ok(Some("warn,h2=off".to_string()))
        );
        let level = from(&[(ENV_LOG_LEVEL, "fatal")]);
        assert_eq!(level.map(|c| c.log_filter), Ok(Some("error".to_string())));
        assert_eq!(from(&[]).map(|c| c.log_filter), Ok(None));
    }
}
