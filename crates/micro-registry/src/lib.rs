//! Service discovery for micro.
//!
//! A [`Registry`] is where services announce their nodes and clients find them, with
//! go-micro's model: a [`Service`] (name, version, metadata, endpoints) has [`Node`]s
//! (id, address, metadata). Implementations:
//!
//! - [`MdnsRegistry`]: multicast DNS on the local network, nothing to install. The default.
//! - [`MemoryRegistry`]: one process; for tests.
//! - `EtcdRegistry` (feature `etcd`): an etcd cluster, past one LAN; go-micro's layout,
//!   so micro and go-micro services in one etcd find each other.
//!
//! [`RegistryConfig`] says which to build; [`RegistryConfig::from_env`] reads it from
//! `MICRO_REGISTRY` and `MICRO_REGISTRY_ADDRESS`, as go-micro does, and
//! `MICRO_MDNS_INTERFACES`. Nothing else in this crate reads the environment.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_registry::Error> {
//! use micro_registry::{Action, MemoryRegistry, Node, RegisterOptions, Registry, Service, WatchOptions};
//!
//! let registry = MemoryRegistry::new();
//! let mut watcher = registry.watch(WatchOptions::service("go.micro.srv.vessel")).await?;
//!
//! let service = Service::new("go.micro.srv.vessel")
//!     .version("latest")
//!     .node(Node::new("go.micro.srv.vessel-1", "10.0.0.5:50051"));
//! registry.register(&service, RegisterOptions::default()).await?;
//!
//! let found = registry.get_service("go.micro.srv.vessel").await?;
//! assert_eq!(found[0].nodes[0].address, "10.0.0.5:50051");
//! assert_eq!(watcher.next().await?.action, Action::Create);
//!
//! registry.deregister(&service).await?;
//! assert_eq!(watcher.next().await?.action, Action::Delete);
//! assert!(registry.get_service("go.micro.srv.vessel").await.unwrap_err().is_not_found());
//! # Ok(()) }
//! ```

mod cache;
mod config;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod mdns;
mod memory;
#[cfg(test)]
mod proptests;
mod registry;
mod service;

pub use cache::{CacheStats, CachedRegistry, DEFAULT_CACHE_TTL, cache_stats};
pub use config::{ENV_REGISTRY, ENV_REGISTRY_ADDRESS, KNOWN, RegistryConfig, RegistryKind};
pub use error::Error;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdRegistry, EtcdRegistryBuilder};
pub use mdns::{MdnsInterfaces, MdnsRegistry, MdnsRegistryBuilder, MdnsStats};
pub use memory::MemoryRegistry;
pub use registry::{Action, Event, RegisterOptions, Registry, WatchOptions, Watcher};
pub use service::{Endpoint, Node, Service, Value};

/// Checks what every registry needs: a name, and nodes with an id and an address.
pub(crate) fn validate(service: &Service) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidService {
        service: service.name.clone(),
        reason: reason.to_string(),
    };
    if service.name.is_empty() {
        return Err(invalid("empty service name"));
    }
    if service.nodes.is_empty() {
        return Err(invalid("no nodes to register"));
    }
    if service.nodes.iter().any(|n| n.id.is_empty()) {
        return Err(invalid("a node has an empty id"));
    }
    if service.nodes.iter().any(|n| n.address.is_empty()) {
        return Err(invalid("a node has an empty address"));
    }
    Ok(())
}
