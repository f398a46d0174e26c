//! What can stop a service from starting or running: configuration, the registry,
//! the transport, the broker, the handlers. Each keeps its cause as `source()`.
//!
//! This is not the wire error: handlers return and callers receive
//! [`Error`](crate::Error), go-micro's `{id, code, detail, status}`.

use micro_transport::TransportError;

use crate::codec::BoxError;
use crate::config::ConfigError;

/// Why a [`Service`](crate::Service) could not be built, started or served.
///
/// ```
/// use std::error::Error as _;
/// use micro_core::{ConfigError, ServiceError};
///
/// let err = ServiceError::from(ConfigError::invalid("MICRO_REGISTER_TTL", "soon", "expected seconds"));
/// assert_eq!(err.to_string(), r#"configuration: MICRO_REGISTER_TTL="soon": expected seconds"#);
/// assert!(err.source().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A setting (an environment variable or a builder value) is not usable.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The registry could not be built, or refused the node.
    #[error("registry: {0}")]
    Registry(#[source] micro_registry::Error),
    /// The server's listener failed.
    #[error("transport: {0}")]
    Transport(#[source] TransportError),
    /// The listen address could not be bound.
    #[error("listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: String,
        /// Why it failed.
        #[source]
        source: TransportError,
    },
    /// The broker could not be built, connected or subscribed.
    #[error("broker: {0}")]
    Broker(#[source] BoxError),
    /// A handler cannot be served as given (a method is already served).
    #[error("handler: {0}")]
    Handler(String),
    /// The serving task ended abnormally.
    #[error("server: {0}")]
    Server(#[source] BoxError),
}
