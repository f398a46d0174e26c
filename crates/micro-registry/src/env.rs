//! Choosing a registry by name or environment, as go-micro does.

use std::sync::Arc;

use crate::{Error, MdnsRegistry, MemoryRegistry, Registry};

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

/// Builds the registry named by `MICRO_REGISTRY` (default `mdns`); a registry with
/// servers reads them from `MICRO_REGISTRY_ADDRESS`.
///
/// An unknown name is an [`Error::Config`] that lists the known ones.
pub fn from_env() -> Result<Arc<dyn Registry>, Error> {
    match std::env::var(ENV_REGISTRY) {
        Ok(name) => by_name(&name),
        Err(std::env::VarError::NotPresent) => by_name("mdns"),
        Err(e) => Err(Error::Config(format!("{ENV_REGISTRY}: {e}"))),
    }
}

/// Builds a registry by name (`mdns`, `memory`, `etcd`). `etcd` reads its members
/// from `MICRO_REGISTRY_ADDRESS` (default `127.0.0.1:2379`).
pub fn by_name(name: &str) -> Result<Arc<dyn Registry>, Error> {
    match name.trim() {
        "" | "mdns" => Ok(Arc::new(MdnsRegistry::new()?)),
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        #[cfg(feature = "etcd")]
        "etcd" => Ok(Arc::new(crate::EtcdRegistry::from_env()?)),
        #[cfg(not(feature = "etcd"))]
        "etcd" => Err(Error::Config(
            "registry \"etcd\" is not in this build: enable micro-registry's (or micro-core's) feature `etcd`".into(),
        )),
        other => Err(Error::Config(format!(
            "unknown registry {other:?} (known: {})",
            KNOWN.join(", ")
        ))),
    }
}
