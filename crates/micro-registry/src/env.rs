//! Choosing a registry by name or environment, as go-micro does.

use std::sync::Arc;

use crate::{Error, MdnsRegistry, MemoryRegistry, Registry};

/// Environment variable naming the registry: `mdns` (default) or `memory`.
pub const ENV_REGISTRY: &str = "MICRO_REGISTRY";
/// Environment variable with the registry's address(es), for registries that have a
/// server (`host:port[,host:port]`). mDNS and memory have none and ignore it.
pub const ENV_REGISTRY_ADDRESS: &str = "MICRO_REGISTRY_ADDRESS";

/// The registries this build knows, by the names `MICRO_REGISTRY` takes.
pub const KNOWN: &[&str] = &["mdns", "memory"];

/// Builds the registry named by `MICRO_REGISTRY` (default `mdns`).
///
/// An unknown name is an [`Error::Config`] that lists the known ones.
pub fn from_env() -> Result<Arc<dyn Registry>, Error> {
    match std::env::var(ENV_REGISTRY) {
        Ok(name) => by_name(&name),
        Err(std::env::VarError::NotPresent) => by_name("mdns"),
        Err(e) => Err(Error::Config(format!("{ENV_REGISTRY}: {e}"))),
    }
}

/// Builds a registry by name (`mdns`, `memory`).
pub fn by_name(name: &str) -> Result<Arc<dyn Registry>, Error> {
    match name.trim() {
        "" | "mdns" => Ok(Arc::new(MdnsRegistry::new()?)),
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        other => Err(Error::Config(format!(
            "unknown registry {other:?} (known: {})",
            KNOWN.join(", ")
        ))),
    }
}
