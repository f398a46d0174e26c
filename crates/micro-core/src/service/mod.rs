//! `Service`: a named server that registers itself, plus what it hands out to its
//! handlers (a client, publishers). Its life (`run`) is in `run.rs`.

mod run;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro_registry::Registry;
use micro_transport::{TcpTransport, Transport};
use tower::Layer;

pub use self::run::shutdown_signal;
use crate::broker::{self, Broker, SubscribeOptions};
use crate::codec::{BoxError, Message};
use crate::event::Publisher;
use crate::server::{Handler, HttpService};
use crate::{Client, ClientBuilder, Config, Context, Error, Server, ServiceError};

/// A subscription made when the service starts.
struct PendingSubscription(String, SubscribeOptions, broker::Handler);

impl std::fmt::Debug for PendingSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Subscription")
            .field(&self.0)
            .field(&self.1)
            .finish()
    }
}

/// What [`Service::client_options`] does to the client's builder.
#[derive(Clone)]
struct ClientOptions(Arc<dyn Fn(ClientBuilder) -> ClientBuilder + Send + Sync>);

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientOptions")
    }
}

/// A named service: it listens, registers a node, serves its handlers and
/// deregisters when it stops.
///
/// ```no_run
/// # async fn run() -> Result<(), micro_core::ServiceError> {
/// use micro_core::Service;
///
/// let service = Service::new("go.micro.srv.greeter")?.version("latest");
/// // let service = service.handle(greeter_handler(Greeter))?;   (generated code)
/// service.run().await // until SIGINT or SIGTERM
/// # }
/// ```
#[derive(Debug)]
pub struct Service {
    name: String,
    version: String,
    metadata: HashMap<String, String>,
    config: Config,
    /// Built on first use: the registry the configuration names is only built if no
    /// other was given (building mDNS starts a daemon that talks on the network).
    registry: OnceLock<Result<Arc<dyn Registry>, micro_registry::Error>>,
    transport: Arc<dyn Transport>,
    /// The broker given, else the one built from the configuration on first use.
    given_broker: Option<Arc<dyn Broker>>,
    broker: OnceLock<Arc<dyn Broker>>,
    subscriptions: Vec<PendingSubscription>,
    server: Server,
    client: OnceLock<Client>,
    client_options: Option<ClientOptions>,
    /// Where traces go when micro installs the default subscriber (else the
    /// environment's `OTEL_*`).
    #[cfg(feature = "otel")]
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Service {
    /// A service named `name`, configured from the environment as go-micro reads it
    /// ([`Config::from_env`]): a variable that is not usable is the error, here.
    pub fn new(name: impl Into<String>) -> Result<Self, ServiceError> {
        Ok(Self::from_config(name, Config::from_env()?))
    }

    /// A service named `name` with `config` (the environment is not read).
    pub fn from_config(name: impl Into<String>, config: Config) -> Self {
        Self {
            name: name.into(),
            version: "latest".to_string(),
            metadata: HashMap::new(),
            config,
            registry: OnceLock::new(),
            transport: Arc::new(TcpTransport::default()),
            given_broker: None,
            broker: OnceLock::new(),
            subscriptions: Vec::new(),
            server: Server::new(),
            client: OnceLock::new(),
            client_options: None,
            #[cfg(feature = "otel")]
            telemetry: None,
        }
    }

    /// Exports traces as `telemetry` says instead of as the environment does
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`, see [`crate::telemetry`]). It applies when the
    /// service installs the default subscriber (the program set none); the export
    /// is flushed at the end of [`Service::run`].
    #[cfg(feature = "otel")]
    #[must_use]
    pub fn telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Exports traces over OTLP/gRPC to `url` (`http://localhost:4317`): shorthand for
    /// [`Service::telemetry`] with [`Telemetry::from_env`](crate::telemetry::Telemetry::from_env)
    /// and that endpoint.
    #[cfg(feature = "otel")]
    #[must_use]
    pub fn otlp_endpoint(self, url: impl Into<String>) -> Self {
        let telemetry = crate::telemetry::Telemetry::from_env().endpoint(url);
        self.telemetry(telemetry)
    }

    /// Sets the version (default `latest`).
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the listen address (overrides `MICRO_SERVER_ADDRESS`).
    #[must_use]
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.config.server_address = address.into();
        self
    }

    /// Sets the address announced in the registry (overrides `MICRO_SERVER_ADVERTISE`).
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.config.advertise = Some(address.into());
        self
    }

    /// Serves Prometheus metrics on `GET /metrics` at `address` (`host:port`, `:port`)
    /// while the service runs; overrides `MICRO_METRICS_ADDRESS`. Needs micro-core's
    /// feature `metrics`: without it, [`run`](Self::run) fails with a configuration
    /// error. See `micro_core::metrics` for the metrics.
    ///
    /// ```
    /// # fn main() -> Result<(), micro_core::ServiceError> {
    /// let service = micro_core::Service::new("go.micro.srv.greeter")?.metrics_address("127.0.0.1:9464");
    /// assert_eq!(service.config().metrics_address.as_deref(), Some("127.0.0.1:9464"));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn metrics_address(mut self, address: impl Into<String>) -> Self {
        self.config.metrics_address = Some(address.into());
        self
    }

    /// Adds service metadata.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Uses `registry` instead of the one the configuration names.
    #[must_use]
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = OnceLock::from(Ok(registry));
        self.reset_derived();
        self
    }

    /// Uses `broker` for events instead of the one the configuration names (default:
    /// the registry broker, which needs no server).
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.given_broker = Some(broker);
        self
    }

    /// Uses `transport` instead of TCP.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self.reset_derived();
        self
    }

    /// Sets how often the service registers again and how long each registration
    /// lives. The TTL must be longer than the interval ([`Service::run`] checks).
    #[must_use]
    pub fn register_interval(mut self, interval: Duration, ttl: Duration) -> Self {
        self.config.register_interval = interval;
        self.config.register_ttl = ttl;
        self
    }

    /// Serves `handler`'s methods (generated `*_handler` functions build one).
    /// Fails if one of them is already served.
    pub fn handle(mut self, handler: Handler) -> Result<Self, ServiceError> {
        self.server = self.server.handle(handler)?;
        Ok(self)
    }

    /// Wraps every request the server takes in a tower layer (see [`Server::layer`]).
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpService> + Send + Sync + 'static,
        L::Service: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error: Into<BoxError>,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    {
        self.server = self.server.layer(layer);
        self
    }

    /// The largest message the server accepts or sends (default 4 MiB).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.server = self.server.max_message_size(bytes);
        self
    }

    /// How long in-flight calls may finish after shutdown starts (default 5 s); the
    /// service exits at most about half a second after it (see [`Service::run_until`]).
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.server = self.server.grace_period(grace);
        self
    }

    /// How long a new connection may take to send the HTTP/2 preface (default 10 s;
    /// see [`Server::handshake_timeout`]).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.server = self.server.handshake_timeout(timeout);
        self
    }

    /// How long a connection may have no call open before it is closed (default
    /// 5 min; `None`: never; see [`Server::idle_timeout`]).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.server = self.server.idle_timeout(timeout);
        self
    }

    /// PINGs connections silent for `interval` and closes those that do not answer
    /// within `timeout` (default 30 s and 10 s; see [`Server::keep_alive`]).
    #[must_use]
    pub fn keep_alive(mut self, interval: impl Into<Option<Duration>>, timeout: Duration) -> Self {
        self.server = self.server.keep_alive(interval, timeout);
        self
    }

    /// How many connections may be open at once (default 10,000; see
    /// [`Server::max_connections`]).
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.server = self.server.max_connections(max);
        self
    }

    /// Handles every message published on `topic` (each subscriber of a topic gets
    /// every message), decoded as `M`. Subscriptions start when the service runs and
    /// end when it stops.
    ///
    /// ```no_run
    /// # use micro_core::{Context, Error, Service};
    /// # #[derive(Clone, PartialEq, micro_core::prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize)]
    /// # #[serde(crate = "micro_core::serde")]
    /// # struct Created { #[prost(string, tag = "1")] id: String }
    /// # micro_core::json_message!(Created);
    /// # fn main() -> Result<(), micro_core::ServiceError> {
    /// let service = Service::new("go.micro.srv.vessel")?
    ///     .subscribe("consignment.created", |_ctx: Context, created: Created| async move {
    ///         println!("booked: {}", created.id);
    ///         Ok::<(), Error>(())
    ///     });
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn subscribe<M, F, Fut>(self, topic: impl Into<String>, handler: F) -> Self
    where
        M: Message,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.subscribe_with(topic, SubscribeOptions::default(), handler)
    }

    /// Like [`Service::subscribe`], with options: a queue group
    /// (`SubscribeOptions::queue("name")`) gets each message once, on one member.
    #[must_use]
    pub fn subscribe_with<M, F, Fut>(
        mut self,
        topic: impl Into<String>,
        options: SubscribeOptions,
        handler: F,
    ) -> Self
    where
        M: Message,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.subscriptions.push(PendingSubscription(
            topic.into(),
            options,
            crate::event::typed_handler(handler),
        ));
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration in force (the environment's, as the builders changed it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server: its handlers and endpoints.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Sets the options of the client [`Service::client`] hands out: `options` gets a
    /// [`ClientBuilder`] over the service's registry and transport, with the defaults,
    /// and returns it changed (timeout, retries, selector, layers, ...). Called again,
    /// the options add up, in order.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use micro_core::layers::LogLayer;
    /// use micro_core::registry::MemoryRegistry;
    /// use micro_core::selector::RoundRobin;
    /// use micro_core::{ClientBuilder, Service};
    ///
    /// let service = Service::new("go.micro.srv.consignment")?
    ///     .registry(Arc::new(MemoryRegistry::new())) // else MICRO_REGISTRY's (mDNS)
    ///     .client_options(|client: ClientBuilder| {
    ///         client
    ///             .request_timeout(Duration::from_secs(5))
    ///             .retries(2)
    ///             .selector(RoundRobin::default())
    ///             .layer(LogLayer)
    ///     });
    /// let client = service.client(); // VesselService::new("go.micro.srv.vessel", client)
    /// # let _ = client;
    /// # Ok::<(), micro_core::ServiceError>(())
    /// ```
    #[must_use]
    pub fn client_options<F>(mut self, options: F) -> Self
    where
        F: Fn(ClientBuilder) -> ClientBuilder + Send + Sync + 'static,
    {
        let options: Arc<dyn Fn(ClientBuilder) -> ClientBuilder + Send + Sync> =
            match self.client_options.take() {
                None => Arc::new(options),
                Some(ClientOptions(before)) => Arc::new(move |b| options(before(b))),
            };
        self.client_options = Some(ClientOptions(options));
        self.client = OnceLock::new();
        self
    }

    /// A client that shares this service's registry and transport, with the options
    /// [`Service::client_options`] set (built once; clones share its connections).
    pub fn client(&self) -> Client {
        self.client
            .get_or_init(|| {
                let registry = match self.resolve_registry() {
                    Ok(r) => r,
                    Err(e) => Arc::new(crate::unavailable::UnavailableRegistry(e)),
                };
                let builder = Client::builder(registry, Arc::clone(&self.transport));
                match &self.client_options {
                    Some(ClientOptions(options)) => options(builder),
                    None => builder,
                }
                .build()
            })
            .clone()
    }

    /// A publisher of `M` on `topic`, through this service's broker.
    pub fn publisher<M: Message>(&self, topic: impl Into<String>) -> Publisher<M> {
        Publisher::new(topic, self.event_broker())
    }

    /// The registry: the one given, else the one the configuration names (built once).
    fn resolve_registry(&self) -> Result<Arc<dyn Registry>, micro_registry::Error> {
        self.registry
            .get_or_init(|| {
                let registry = self.config.registry.build();
                if let Err(e) = &registry {
                    tracing::error!(error = %e, "no registry");
                }
                registry
            })
            .clone()
    }

    /// The broker events go through: the one given, else the one the configuration
    /// names (built once).
    fn event_broker(&self) -> Arc<dyn Broker> {
        if let Some(given) = &self.given_broker {
            return Arc::clone(given);
        }
        Arc::clone(self.broker.get_or_init(|| {
            let registry = match self.resolve_registry() {
                Ok(r) => r,
                Err(e) => Arc::new(crate::unavailable::UnavailableRegistry(e)),
            };
            broker::build(&self.config, registry, Arc::clone(&self.transport))
        }))
    }

    /// Forgets what was built from the registry and transport, after one changed.
    fn reset_derived(&mut self) {
        self.client = OnceLock::new();
        self.broker = OnceLock::new();
    }
}
