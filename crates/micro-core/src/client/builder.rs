//! [`ClientBuilder`]: a client's options.

use std::sync::Arc;
use std::time::Duration;

use micro_registry::Registry;
use micro_transport::{TcpTransport, Transport};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::budget::RetryBudget;
use super::eject::Ejection;
use super::error::LayerError;
use super::{Body, Client, HttpClient, LayerFn};
use crate::codec::{BoxError, DEFAULT_MAX_MESSAGE_SIZE};
use crate::selector::{Random, Selector};
use crate::{Config, ServiceError};

/// How long a call may take by default, retries included (go-micro v4's value).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a call is retried after a connection failure or UNAVAILABLE
/// (go-micro v4's value).
pub const DEFAULT_RETRIES: usize = 5;

/// go-micro's backoff before retry `attempt` (1-based): `100 ms * attempt^e`, whole
/// multiples of 100 ms: 100 ms, 600 ms, 1.9 s, 4.3 s, 7.9 s.
pub fn default_backoff(attempt: u32) -> Duration {
    let factor = f64::from(attempt).powf(std::f64::consts::E).floor();
    Duration::from_millis(100).mul_f64(factor.min(1200.0))
}

/// Builds a [`Client`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use micro_core::registry::MemoryRegistry;
/// use micro_core::selector::RoundRobin;
/// use micro_core::transport::TcpTransport;
/// use micro_core::Client;
///
/// let client = Client::builder(Arc::new(MemoryRegistry::new()), Arc::new(TcpTransport::default()))
///     .request_timeout(Duration::from_secs(5))
///     .retries(2)
///     .selector(RoundRobin::default())
///     .build();
/// assert_eq!(client.connections(), 0);
/// ```
pub struct ClientBuilder {
    pub(super) registry: Arc<dyn Registry>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) selector: Arc<dyn Selector>,
    pub(super) request_timeout: Duration,
    pub(super) retries: usize,
    pub(super) backoff: fn(u32) -> Duration,
    pub(super) max_message_size: usize,
    pub(super) layers: Vec<LayerFn>,
    pub(super) ejection: Ejection,
    pub(super) retry_budget: RetryBudget,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("selector", &self.selector)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder whose registry is the one the environment names, as a
    /// [`Service`](crate::Service)'s is ([`Config::from_env`]), over TCP.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use micro_core::ClientBuilder;
    ///
    /// let client = ClientBuilder::from_env()?
    ///     .request_timeout(Duration::from_secs(5))
    ///     .retries(1)
    ///     .build();
    /// # Ok::<(), micro_core::ServiceError>(())
    /// ```
    pub fn from_env() -> Result<Self, ServiceError> {
        Self::from_config(&Config::from_env()?)
    }

    /// A builder whose registry is the one `config.registry` names, over TCP. Fails
    /// when that registry cannot be built ([`ServiceError::Registry`]).
    pub fn from_config(config: &Config) -> Result<Self, ServiceError> {
        let registry = config.registry.build().map_err(ServiceError::Registry)?;
        Ok(Self::new(registry, Arc::new(TcpTransport::default())))
    }

    pub(super) fn new(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> Self {
        Self {
            registry,
            transport,
            selector: Arc::new(Random),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: default_backoff,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            layers: Vec::new(),
            ejection: Ejection::default(),
            retry_budget: RetryBudget::default(),
        }
    }

    /// Chooses nodes with `selector` (default [`Random`]).
    #[must_use]
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// The default timeout of a call, retries included (default 30 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The default number of retries (default 5).
    #[must_use]
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The delay before retry `n` (1-based; default [`default_backoff`]).
    #[must_use]
    pub fn backoff(mut self, backoff: fn(u32) -> Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// When failing nodes are taken out of the choice, and for how long (see
    /// [`Ejection`]; defaults from Envoy and linkerd).
    #[must_use]
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// How many retries the client may make in all (see [`RetryBudget`]; default 20 %
    /// of calls plus 10 per second).
    #[must_use]
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.retry_budget = budget;
        self
    }

    /// The largest message sent or accepted (default 4 MiB).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Wraps every request in a tower layer (the last added runs first), between the
    /// gRPC encoding and the node's connection: each attempt of a call passes through
    /// it, as an `http::Request` whose path is `/package.Service/Method`. The layer's
    /// service takes and returns the [`HttpClient`]'s types; its error is anything
    /// that converts into a boxed error, and reaches the caller as a 500 (or as the
    /// status, if it is one).
    ///
    /// Any tower layer of that shape fits: here, one that adds a header to every
    /// request (the token a server's [`TokenAuthLayer`](crate::layers::TokenAuthLayer)
    /// checks), and [`LogLayer`](crate::layers::LogLayer), which logs each attempt's
    /// path, status and duration:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use micro_core::layers::LogLayer;
    /// use micro_core::registry::MemoryRegistry;
    /// use micro_core::transport::TcpTransport;
    /// use micro_core::Client;
    /// use tower::util::MapRequestLayer; // tower = { version = "0.5", features = ["util"] }
    ///
    /// let bearer = MapRequestLayer::new(|mut request: http::Request<tonic::body::Body>| {
    ///     let token = http::HeaderValue::from_static("Bearer s3cret");
    ///     request.headers_mut().insert("authorization", token);
    ///     request
    /// });
    /// let client = Client::builder(Arc::new(MemoryRegistry::new()), Arc::new(TcpTransport::default()))
    ///     .layer(bearer)   // runs second
    ///     .layer(LogLayer) // runs first
    ///     .build();
    /// # let _ = client;
    /// ```
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpClient> + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner).map_err(|e| LayerError(e.into())))
        }));
        self
    }

    /// The client.
    pub fn build(self) -> Client {
        Client::from_builder(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_go_micros() {
        let ms: Vec<u128> = (1..=5).map(|n| default_backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 600, 1900, 4300, 7900]);
    }
}
