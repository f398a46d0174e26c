//! Which registry to build, and the one place micro-registry reads the environment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mdns::ENV_INTERFACES;
use crate::{Error, MdnsInterfaces, MdnsRegistry, MemoryRegistry, Registry};

/// Environment variable naming the registry: `mdns` (default), `memory` or `etcd`.
pub const ENV_REGISTRY: &str = "MICRO_REGISTRY";
/// Environment variable with the registry's address(es), for registries that have a
/// server (`host:port[,host:port]`). mDNS and memory have none and ignore it.
pub const ENV_REGISTRY_ADDRESS: &str = "MICRO_REGISTRY_ADDRESS";

/// The registries this build knows, by the names `MICRO_REGISTRY` takes.
#[cfg(feature = "etcd")]
pub const KNOWN: &[&str] = &["mdns", "memory", "etcd"];
/// The registries this build knows, by the names `MICRO_REGISTRY` takes.
#[cfg(not(feature = "etcd"))]
pub const KNOWN: &[&str] = &["mdns", "memory"];

/// Which registry to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryKind {
    /// [`MdnsRegistry`]: one LAN, nothing to install. The default.
    #[default]
    Mdns,
    /// [`MemoryRegistry`]: one process.
    Memory,
    /// `EtcdRegistry`: an etcd cluster. Needs the feature `etcd`.
    Etcd,
}

/// Why a registry name was refused; worded by the caller, who knows where it came from.
enum BadKind {
    Unknown,
    NotBuilt,
}

const ETCD_NOT_BUILT: &str =
    "not in this build: enable micro-registry's (or micro-core's) feature `etcd`";

fn known() -> String {
    format!("known: {}", KNOWN.join(", "))
}

fn parse_kind(name: &str) -> Result<RegistryKind, BadKind> {
    match name.trim() {
        "" | "mdns" => Ok(RegistryKind::Mdns),
        "memory" => Ok(RegistryKind::Memory),
        "etcd" if cfg!(feature = "etcd") => Ok(RegistryKind::Etcd),
        "etcd" => Err(BadKind::NotBuilt),
        _ => Err(BadKind::Unknown),
    }
}

impl std::str::FromStr for RegistryKind {
    type Err = Error;

    /// `mdns` (or empty), `memory` or `etcd`. Anything else is an [`Error::Config`]
    /// listing [`KNOWN`]; `etcd` is one too when the feature `etcd` is off.
    fn from_str(name: &str) -> Result<Self, Error> {
        parse_kind(name).map_err(|bad| {
            Error::Config(match bad {
                BadKind::Unknown => format!("unknown registry {name:?} ({})", known()),
                BadKind::NotBuilt => format!("registry {name:?} is {ETCD_NOT_BUILT}"),
            })
        })
    }
}

/// The registry to build and its options: [`RegistryConfig::from_env`] reads them,
/// checked, from the environment (the only place micro-registry does), and
/// [`RegistryConfig::build`] makes the registry.
///
/// ```
/// # fn main() -> Result<(), micro_registry::Error> {
/// use micro_registry::{RegistryConfig, RegistryKind};
///
/// let registry = RegistryConfig::default().kind(RegistryKind::Memory).build()?;
/// assert_eq!(registry.name(), "memory");
/// # Ok(()) }
/// ```
///
/// A process configured by its environment, as go-micro's are:
///
/// ```no_run
/// # fn main() -> Result<(), micro_registry::Error> {
/// use micro_registry::RegistryConfig;
///
/// // MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=10.0.0.1:2379,10.0.0.2:2379
/// let registry = RegistryConfig::from_env()?.build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Which registry (`MICRO_REGISTRY`; default mDNS).
    pub kind: RegistryKind,
    /// The servers of a registry that has them (`MICRO_REGISTRY_ADDRESS`); for etcd,
    /// `host:port`, `host` or `http://host:port`, and none means `127.0.0.1:2379`.
    /// mDNS and memory ignore them.
    pub addresses: Vec<String>,
    /// The interfaces mDNS uses ([`ENV_INTERFACES`]; default all).
    pub mdns_interfaces: MdnsInterfaces,
}

impl RegistryConfig {
    /// Reads `MICRO_REGISTRY`, `MICRO_REGISTRY_ADDRESS` and `MICRO_MDNS_INTERFACES`.
    /// Unset variables take the defaults.
    ///
    /// Every value is checked here (for etcd, each address too): a bad one is an
    /// [`Error::Config`] naming the variable and its value.
    pub fn from_env() -> Result<Self, Error> {
        let mut vars = HashMap::new();
        for name in [ENV_REGISTRY, ENV_REGISTRY_ADDRESS, ENV_INTERFACES] {
            match std::env::var(name) {
                Ok(value) => {
                    vars.insert(name, value);
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(raw)) => {
                    return Err(Error::Config(format!("{name}={raw:?}: not valid UTF-8")));
                }
            }
        }
        Self::from_vars(|name| vars.get(name).cloned())
    }

    /// [`RegistryConfig::from_env`] on variables looked up by `get` instead of the
    /// environment: a command-line tool's flags over the environment, or a test's map.
    ///
    /// ```
    /// use micro_registry::{RegistryConfig, RegistryKind};
    ///
    /// let config = RegistryConfig::from_lookup(|name| (name == "MICRO_REGISTRY").then(|| "memory".to_string()))?;
    /// assert_eq!(config.kind, RegistryKind::Memory);
    /// assert!(RegistryConfig::from_lookup(|_| Some("nope".to_string())).is_err());
    /// # Ok::<(), micro_registry::Error>(())
    /// ```
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::from_vars(get)
    }

    /// [`RegistryConfig::from_env`] on variables looked up by `get`.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let invalid =
            |name: &str, value: &str, why: &str| Error::Config(format!("{name}={value:?}: {why}"));

        let kind = match get(ENV_REGISTRY) {
            None => RegistryKind::default(),
            Some(value) => parse_kind(&value).map_err(|bad| match bad {
                BadKind::Unknown => invalid(
                    ENV_REGISTRY,
                    &value,
                    &format!("unknown registry ({})", known()),
                ),
                BadKind::NotBuilt => invalid(ENV_REGISTRY, &value, ETCD_NOT_BUILT),
            })?,
        };

        let listed = get(ENV_REGISTRY_ADDRESS).unwrap_or_default();
        let addresses: Vec<String> = listed
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        #[cfg(feature = "etcd")]
        if kind == RegistryKind::Etcd {
            for address in &addresses {
                crate::etcd::member_url(address).map_err(|e| {
                    let why = match e {
                        Error::Config(why) => why,
                        other => other.to_string(),
                    };
                    invalid(ENV_REGISTRY_ADDRESS, &listed, &why)
                })?;
            }
        }

        let mdns_interfaces = match get(ENV_INTERFACES) {
            None => MdnsInterfaces::default(),
            Some(value) => crate::mdns::parse_interfaces(&value)
                .map_err(|why| invalid(ENV_INTERFACES, &value, why))?,
        };

        Ok(Self {
            kind,
            addresses,
            mdns_interfaces,
        })
    }

    /// Sets which registry to build.
    #[must_use]
    pub fn kind(mut self, kind: RegistryKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the registry's servers: for etcd, `host:port`, `host` or `http://host:port`.
    #[must_use]
    pub fn addresses<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.addresses = addresses.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the interfaces mDNS uses.
    #[must_use]
    pub fn mdns_interfaces(mut self, interfaces: MdnsInterfaces) -> Self {
        self.mdns_interfaces = interfaces;
        self
    }

    /// Builds the registry. Reads no environment.
    ///
    /// mDNS starts its daemon here; etcd dials nothing until its first operation.
    /// [`RegistryKind::Etcd`] without the feature `etcd` is an [`Error::Config`].
    pub fn build(&self) -> Result<Arc<dyn Registry>, Error> {
        match self.kind {
            RegistryKind::Mdns => Ok(Arc::new(
                MdnsRegistry::builder()
                    .interfaces(self.mdns_interfaces.clone())
                    .build()?,
            )),
            RegistryKind::Memory => Ok(Arc::new(MemoryRegistry::new())),
            #[cfg(feature = "etcd")]
            RegistryKind::Etcd => Ok(Arc::new(crate::EtcdRegistry::new(
                self.addresses.iter().cloned(),
            )?)),
            #[cfg(not(feature = "etcd"))]
            RegistryKind::Etcd => Err(Error::Config(format!(
                "registry \"etcd\" is {ETCD_NOT_BUILT}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<RegistryConfig, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RegistryConfig::from_vars(|name| vars.get(name).cloned())
    }

    fn message(result: Result<RegistryConfig, Error>) -> String {
        match result {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(from(&[]), Ok(RegistryConfig::default()));
        let config = RegistryConfig::default();
        assert_eq!(config.kind, RegistryKind::Mdns);
        assert!(config.addresses.is_empty());
        assert_eq!(config.mdns_interfaces, MdnsInterfaces::All);
        assert_eq!(
            from(&[(ENV_REGISTRY, ""), (ENV_INTERFACES, "")]),
            Ok(RegistryConfig::default())
        );
    }

    #[test]
    fn reads_every_variable() {
        assert_eq!(
            from(&[
                (ENV_REGISTRY, " memory "),
                (ENV_REGISTRY_ADDRESS, "a:1, b:2,"),
                (ENV_INTERFACES, "loopback"),
            ]),
            Ok(RegistryConfig::default()
                .kind(RegistryKind::Memory)
                .addresses(["a:1", "b:2"])
                .mdns_interfaces(MdnsInterfaces::Loopback))
        );
    }

    #[test]
    fn unknown_registry_names_the_variable_and_value() {
        let err = message(from(&[(ENV_REGISTRY, "zookeeper")]));
        assert!(
            err.contains(&format!(
                "MICRO_REGISTRY=\"zookeeper\": unknown registry (known: {})",
                KNOWN.join(", ")
            )),
            "{err}"
        );
        let err = "zookeeper".parse::<RegistryKind>().unwrap_err().to_string();
        assert!(err.contains("unknown registry \"zookeeper\""), "{err}");
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn bad_etcd_address_fails_when_read() {
        let err = message(from(&[
            (ENV_REGISTRY, "etcd"),
            (ENV_REGISTRY_ADDRESS, "10.0.0.1:2379,etcd:port"),
        ]));
        assert!(
            err.contains("MICRO_REGISTRY_ADDRESS=\"10.0.0.1:2379,etcd:port\""),
            "{err}"
        );
        assert!(err.contains("\"etcd:port\""), "{err}");
        // Only etcd reads addresses.
        assert!(
            from(&[
                (ENV_REGISTRY, "memory"),
                (ENV_REGISTRY_ADDRESS, "etcd:port")
            ])
            .is_ok()
        );
        assert_eq!(
            from(&[(ENV_REGISTRY, "etcd"), (ENV_REGISTRY_ADDRESS, "etcd,[::1]")]),
            Ok(RegistryConfig::default()
                .kind(RegistryKind::Etcd)
                .addresses(["etcd", "[::1]"]))
        );
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_without_the_feature_says_to_enable_it() {
        let err = message(from(&[(ENV_REGISTRY, "etcd")]));
        assert!(err.contains("MICRO_REGISTRY=\"etcd\""), "{err}");
        assert!(err.contains("feature `etcd`"), "{err}");
        let err = "etcd".parse::<RegistryKind>().unwrap_err().to_string();
        assert!(err.contains("feature `etcd`"), "{err}");
        let built = RegistryConfig::default().kind(RegistryKind::Etcd).build();
        assert!(matches!(built, Err(Error::Config(_))));
    }

    #[test]
    fn bad_mdns_interfaces_fail() {
        let err = message(from(&[(ENV_INTERFACES, "eth0, wl an0")]));
        assert!(
            err.contains("MICRO_MDNS_INTERFACES=\"eth0, wl an0\""),
            "{err}"
        );
    }

    #[test]
    fn memory_builds() {
        let registry = RegistryConfig::default().kind(RegistryKind::Memory).build();
        assert_eq!(registry.map(|r| r.name()), Ok("memory"));
    }
}
