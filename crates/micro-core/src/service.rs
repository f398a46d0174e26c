//! `Service`: a named server that registers itself, plus a client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::{Node, RegisterOptions, Registry};
use micro_transport::{TcpTransport, Transport};

use crate::broker::{self, Broker, SubscribeOptions};
use crate::server::Json;
use crate::{Client, Context, Error, Server, addr};

/// Environment variable with the address to listen on (`:50051`, `127.0.0.1:0`).
pub const ENV_SERVER_ADDRESS: &str = "MICRO_SERVER_ADDRESS";
/// Environment variable with the address to announce instead of the bound one.
pub const ENV_SERVER_ADVERTISE: &str = "MICRO_SERVER_ADVERTISE";
/// Environment variable: seconds between re-registrations (go-micro's `MICRO_REGISTER_INTERVAL`).
pub const ENV_REGISTER_INTERVAL: &str = "MICRO_REGISTER_INTERVAL";
/// Environment variable: seconds a registration lives (go-micro's `MICRO_REGISTER_TTL`).
pub const ENV_REGISTER_TTL: &str = "MICRO_REGISTER_TTL";
/// How often a running service registers again (go-micro's default).
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// How long a registration lives unless renewed (go-micro's default).
pub const DEFAULT_REGISTER_TTL: Duration = Duration::from_secs(90);

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

/// A named service: it listens, registers a node, serves its handlers and
/// deregisters when it stops.
///
/// ```no_run
/// # async fn run() -> Result<(), micro_core::Error> {
/// use micro_core::Service;
///
/// let mut service = Service::new("go.micro.srv.greeter").version("latest");
/// // register_greeter_handler(service.server(), Greeter)?;   (generated code)
/// service.run().await // until SIGINT or SIGTERM
/// # }
/// ```
#[derive(Debug)]
pub struct Service {
    name: String,
    version: String,
    address: String,
    advertise: Option<String>,
    metadata: HashMap<String, String>,
    /// `None` until needed: the registry `MICRO_REGISTRY` names is only built if no
    /// other was given (building mDNS starts a daemon that talks on the network).
    registry: Option<Result<Arc<dyn Registry>, micro_registry::Error>>,
    transport: Arc<dyn Transport>,
    broker: Option<Arc<dyn Broker>>,
    subscriptions: Vec<PendingSubscription>,
    register_interval: Duration,
    register_ttl: Duration,
    config_error: Option<String>,
    server: Server,
    client: Option<Client>,
}

impl Service {
    /// A service named `name` configured from the environment, as go-micro reads it:
    /// `MICRO_REGISTRY` (default `mdns`), `MICRO_SERVER_ADDRESS` (default: all
    /// interfaces, a free port), `MICRO_SERVER_ADVERTISE`.
    ///
    /// `MICRO_REGISTER_INTERVAL` and `MICRO_REGISTER_TTL` (seconds) set the
    /// re-registration interval and the TTL.
    ///
    /// Configuration errors are reported by [`Service::run`] (and by calls made with
    /// [`Service::client`]), never by a panic.
    pub fn new(name: impl Into<String>) -> Self {
        let mut config_error = None;
        let mut seconds = |key: &str, default: Duration| match std::env::var(key) {
            Err(_) => default,
            Ok(value) => match value.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => {
                    config_error = Some(format!(
                        "{key}={value:?}: expected a positive number of seconds"
                    ));
                    default
                }
            },
        };
        let register_interval = seconds(ENV_REGISTER_INTERVAL, DEFAULT_REGISTER_INTERVAL);
        let register_ttl = seconds(ENV_REGISTER_TTL, DEFAULT_REGISTER_TTL);
        Self {
            name: name.into(),
            version: "latest".to_string(),
            address: std::env::var(ENV_SERVER_ADDRESS).unwrap_or_default(),
            advertise: std::env::var(ENV_SERVER_ADVERTISE)
                .ok()
                .filter(|a| !a.is_empty()),
            metadata: HashMap::new(),
            registry: None,
            transport: Arc::new(TcpTransport::default()),
            broker: None,
            subscriptions: Vec::new(),
            register_interval,
            register_ttl,
            config_error,
            server: Server::new(),
            client: None,
        }
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
        self.address = address.into();
        self
    }

    /// Sets the address announced in the registry (overrides `MICRO_SERVER_ADVERTISE`).
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Adds service metadata.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Uses `registry` instead of the one `MICRO_REGISTRY` names.
    #[must_use]
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(Ok(registry));
        self.client = None;
        self
    }

    /// Uses `broker` for events instead of the one `MICRO_BROKER` names (default: the
    /// registry broker, which needs no server).
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self.client = None;
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
    /// let mut service = Service::new("go.micro.srv.vessel");
    /// service.subscribe("consignment.created", |_ctx: Context, created: Created| async move {
    ///     println!("booked: {}", created.id);
    ///     Ok::<(), Error>(())
    /// });
    /// ```
    pub fn subscribe<M, F, Fut>(&mut self, topic: impl Into<String>, handler: F) -> &mut Self
    where
        M: prost::Message + Default + Json,
        F: Fn(Context, M) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.subscribe_with(topic, SubscribeOptions::default(), handler)
    }

    /// Like [`Service::subscribe`], with options: a queue group
    /// (`SubscribeOptions::queue("name")`) gets each message once, on one member.
    pub fn subscribe_with<M, F, Fut>(
        &mut self,
        topic: impl Into<String>,
        options: SubscribeOptions,
        handler: F,
    ) -> &mut Self
    where
        M: prost::Message + Default + Json,
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

    /// The registry: the one given, else the one `MICRO_REGISTRY` names (built once).
    fn resolve_registry(&mut self) -> Result<Arc<dyn Registry>, micro_registry::Error> {
        self.registry
            .get_or_insert_with(|| {
                let registry = micro_registry::from_env();
                if let Err(e) = &registry {
                    tracing::error!(error = %e, "no registry");
                }
                registry
            })
            .clone()
    }

    /// The broker events go through (built from `MICRO_BROKER` on first use).
    fn event_broker(&mut self) -> Result<Arc<dyn Broker>, Error> {
        if let Some(broker) = &self.broker {
            return Ok(Arc::clone(broker));
        }
        let registry = self.resolve_registry().map_err(Error::from)?;
        let broker = broker::from_env(registry, Arc::clone(&self.transport))
            .map_err(|e| Error::internal_server_error("go.micro.broker", e.to_string()))?;
        self.broker = Some(Arc::clone(&broker));
        Ok(broker)
    }

    /// Uses `transport` instead of TCP.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self.client = None;
        self
    }

    /// Sets how often the service registers again and how long each registration
    /// lives. The TTL must be longer than the interval.
    #[must_use]
    pub fn register_interval(mut self, interval: Duration, ttl: Duration) -> Self {
        self.register_interval = interval;
        self.register_ttl = ttl;
        self.config_error = None;
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server, to add handlers to.
    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }

    /// A client that shares this service's registry and transport.
    pub fn client(&mut self) -> Client {
        if let Some(client) = &self.client {
            return client.clone();
        }
        let registry: Arc<dyn Registry> = match self.resolve_registry() {
            Ok(r) => r,
            Err(e) => Arc::new(crate::unavailable::UnavailableRegistry(e)),
        };
        let mut builder = Client::builder(registry, Arc::clone(&self.transport));
        match self.event_broker() {
            Ok(broker) => builder = builder.broker(broker),
            Err(e) => tracing::error!(error = %e, "no broker"),
        }
        let client = builder.build();
        self.client = Some(client.clone());
        client
    }

    /// Serves until SIGINT or SIGTERM, then deregisters and stops.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then deregisters and stops: the registry
    /// forgets the node before the listener closes, and in-flight calls get the
    /// server's grace period to finish.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        if let Some(e) = self.config_error.take() {
            return Err(Error::internal_server_error("go.micro.server", e));
        }
        let broker = self.event_broker()?;
        let registry = self.resolve_registry().map_err(Error::from)?;
        if self.register_ttl <= self.register_interval {
            return Err(Error::internal_server_error(
                "go.micro.server",
                format!(
                    "register TTL {:?} must be longer than the register interval {:?}",
                    self.register_ttl, self.register_interval
                ),
            ));
        }
        let listen = addr::listen_address(&self.address);
        let listener = self.transport.listen(&listen).await?;
        let bound = listener.local_addr();
        let advertised = self
            .advertise
            .clone()
            .unwrap_or_else(|| addr::advertise_address(&bound));

        let mut node = Node::new(
            format!("{}-{}", self.name, uuid::Uuid::new_v4()),
            advertised,
        );
        for (key, value) in [
            ("protocol", "grpc"),
            ("server", "micro"),
            ("transport", self.transport.name()),
            ("registry", registry.name()),
            ("broker", broker.name()),
        ] {
            node.metadata.insert(key.to_string(), value.to_string());
        }
        let record = micro_registry::Service {
            name: self.name.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            endpoints: self.server.endpoints().to_vec(),
            nodes: vec![node],
        };

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let router = self.server.service();
        let grace = self.server.grace_period();
        let mut stop_server = stop_rx.clone();
        let serving = tokio::spawn(crate::server::serve(listener, router, grace, async move {
            let _ = stop_server.wait_for(|stop| *stop).await;
        }));

        broker
            .connect()
            .await
            .map_err(|e| Error::internal_server_error("go.micro.broker", e.to_string()))?;
        let mut subscribers = Vec::new();
        for PendingSubscription(topic, options, handler) in std::mem::take(&mut self.subscriptions)
        {
            let subscriber = broker
                .subscribe(&topic, handler, options)
                .await
                .map_err(|e| {
                    Error::internal_server_error(
                        "go.micro.broker",
                        format!("subscribe {topic}: {e}"),
                    )
                })?;
            subscribers.push(subscriber);
        }
        self.server.set_health(true).await;
        register_with_retries(registry.as_ref(), &record, self.register_ttl).await?;
        tracing::info!(
            service = %self.name,
            version = %self.version,
            node = %record.nodes[0].id,
            address = %record.nodes[0].address,
            listen = %bound,
            registry = registry.name(),
            "service started"
        );

        let reregister = {
            let registry = Arc::clone(&registry);
            let record = record.clone();
            let (interval, ttl) = (self.register_interval, self.register_ttl);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = registry
                        .register(&record, RegisterOptions::with_ttl(ttl))
                        .await
                    {
                        tracing::warn!(error = %e, "re-register failed");
                    }
                }
            })
        };

        tokio::pin!(shutdown);
        let mut serving = serving;
        let served_early = tokio::select! {
            () = &mut shutdown => None,
            result = &mut serving => Some(result),
        };
        reregister.abort();
        self.server.set_health(false).await;
        // Leave the registry before closing the listener, so nobody is sent to a
        // node that no longer answers.
        if let Err(e) = registry.deregister(&record).await {
            tracing::warn!(error = %e, "deregister failed");
        }
        tracing::info!(service = %self.name, node = %record.nodes[0].id, "deregistered");
        // Subscriptions end with the node: nothing more is delivered here.
        drop(subscribers);
        if let Err(e) = broker.disconnect().await {
            tracing::warn!(error = %e, "broker disconnect failed");
        }
        let _ = stop_tx.send(true);
        let result = match served_early {
            Some(result) => result,
            None => serving.await,
        };
        match result {
            Ok(served) => served,
            Err(join) => Err(Error::internal_server_error(
                "go.micro.server",
                format!("server task failed: {join}"),
            )),
        }
    }
}

async fn register_with_retries(
    registry: &dyn Registry,
    record: &micro_registry::Service,
    ttl: Duration,
) -> Result<(), Error> {
    let mut last = None;
    for attempt in 0..3u32 {
        match registry
            .register(record, RegisterOptions::with_ttl(ttl))
            .await
        {
            Ok(()) => return Ok(()),
            // A service that can never be registered as it is will not be fixed by retrying.
            Err(e @ micro_registry::Error::InvalidService { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "register failed");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
            }
        }
    }
    Err(last.map(Error::from).unwrap_or_default())
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    _ = int.recv() => tracing::info!("received SIGINT"),
                }
                return;
            }
            _ => tracing::warn!("cannot install signal handlers; falling back to Ctrl-C"),
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        // No way to be told to stop: serve until killed.
        std::future::pending::<()>().await;
    }
}
