//! Registry errors.

/// What can go wrong in a registry.
///
/// "Not found" is its own variant so callers can tell a missing service from a
/// broken backend.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No node of the named service is known.
    #[error("service {0}: not found")]
    NotFound(String),
    /// The service given to `register` or `deregister` cannot be used as it is.
    #[error("invalid service {service:?}: {reason}")]
    InvalidService {
        /// The service's name.
        service: String,
        /// Why it was refused.
        reason: String,
    },
    /// The backend failed (sockets, daemon, remote registry).
    #[error("{registry} registry: {message}")]
    Backend {
        /// The registry's name (`mdns`, `memory`, ...).
        registry: &'static str,
        /// What failed.
        message: String,
    },
    /// The configuration (options or environment) is not usable.
    #[error("registry configuration: {0}")]
    Config(String),
    /// A watcher fell behind and events were dropped; re-read the registry to resync.
    #[error("watcher lagged: {0} events dropped")]
    Lagged(u64),
    /// The watcher or registry was stopped.
    #[error("watcher stopped")]
    Stopped,
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}
