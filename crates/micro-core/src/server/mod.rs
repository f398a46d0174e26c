//! The server: routes gRPC requests to handlers and serves them over a transport.
//!
//! Routing matches the full gRPC path (`/go.micro.srv.vessel.VesselService/FindAvailable`)
//! and, failing that, the last segment of the service name (`VesselService/FindAvailable`),
//! as go-micro's gRPC server does: go-micro clients build the path from the *registry*
//! name (`/<registry name>.<Service>/<Method>`), which need not equal the proto package.
//!
//! Every server also answers `grpc.health.v1.Health` (tonic-health) and gRPC server
//! reflection v1 and v1alpha (tonic-reflection), so `grpcurl` and Kubernetes probes
//! work with no proto files at hand. Health answers for the server as a whole (`""`),
//! the registry name a [`Service`](crate::Service) runs under and each served proto
//! service; reflection lists the served services, health and reflection only, even
//! when more services were compiled with the same protos.
//!
//! Middleware is tower layers ([`Server::layer`]), applied to every request, built-in
//! services included; see the crate docs for a logging and an auth layer.

//!
//! The files: `handler` (a proto service's methods), `call` (serving one request),
//! `router` (dispatch by path), `serve` (connections and the graceful stop).
//!
//! # Connections
//!
//! Every connection is bounded, so that peers cannot hold a server's sockets and
//! memory for nothing:
//!
//! | bound | default | builder |
//! |---|---|---|
//! | HTTP/2 preface within | 10 s | [`Server::handshake_timeout`] |
//! | closed (GOAWAY) after no call for | 5 min | [`Server::idle_timeout`] |
//! | PING every / answer within | 30 s / 10 s | [`Server::keep_alive`] |
//! | open connections at most | 10,000 | [`Server::max_connections`] |
//!
//! Why these: a real client sends its preface in the same round trip as its TCP
//! handshake, so 10 s only ever cuts off peers that connected and said nothing (TLS
//! handshakes have their own timeout in the transport). Five minutes without a call
//! reclaims connections nobody uses (a client that calls again reconnects in one
//! round trip; micro's pool and tonic reconnect by themselves) while pooled
//! connections of services that call each other every few seconds or minutes stay
//! up. A PING after 30 s of silence, answered within 10 s, finds peers that vanished
//! without closing (a crashed host, a dropped NAT mapping) in under a minute
//! instead of the operating system's two hours; it costs 17 bytes each way per
//! quiet connection. 10,000 connections is far more than a service's callers need
//! (one per calling process) yet a bounded amount of memory (tens of KiB each);
//! connections beyond it are closed as soon as they are accepted, counted, and
//! logged (a warning at most every 10 s).
//!
//! None of these has a `MICRO_*` variable: go-micro has no equivalent settings.

pub(crate) mod call;
mod handler;
mod on_wake;
mod router;
mod serve;
mod span;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use self::call::{Body, Limits};
pub use self::handler::Handler;
pub(crate) use self::router::Stack;
use self::router::{Route, Router};
use self::serve::ConnectionOptions;
pub(crate) use self::serve::{Control, serve, serve_with};
use crate::ServiceError;
use crate::codec::{BoxError, DEFAULT_MAX_MESSAGE_SIZE};

/// The services every server answers besides its handlers' (health, and reflection
/// v1 and v1alpha), as reflection lists them.
const BUILTIN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// How long in-flight calls may run on after shutdown starts, by default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// How long a new connection may take to send the HTTP/2 preface, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go without a call before it is closed, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a connection may be silent before the server PINGs it, by default.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the server waits for a PING's answer before closing, by default.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections may be open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The HTTP service a server layer wraps: gRPC requests in, responses out.
pub type HttpService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

type LayerFn = Arc<dyn Fn(HttpService) -> HttpService + Send + Sync>;

/// Holds the handlers of a service and serves them.
///
/// A [`Service`](crate::Service) owns one and adds the handlers given to
/// [`Service::handle`](crate::Service::handle); build one by hand to serve without a
/// registry (the registry broker does).
pub struct Server {
    routes: HashMap<String, Route>,
    handlers: Vec<String>,
    endpoints: Vec<Endpoint>,
    descriptors: Vec<&'static [u8]>,
    layers: Vec<LayerFn>,
    max_message_size: usize,
    grace_period: Duration,
    connections: ConnectionOptions,
    health: tonic_health::server::HealthReporter,
    health_service: HttpService,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("handlers", &self.handlers)
            .field("layers", &self.layers.len())
            .field("max_message_size", &self.max_message_size)
            .field("grace_period", &self.grace_period)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

fn boxed<S>(service: S) -> HttpService
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

impl Server {
    /// A server with no handlers and the default limits.
    pub fn new() -> Self {
        let (health, health_server) = tonic_health::server::health_reporter();
        Self {
            routes: HashMap::new(),
            handlers: Vec::new(),
            endpoints: Vec::new(),
            descriptors: Vec::new(),
            layers: Vec::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            grace_period: DEFAULT_GRACE_PERIOD,
            connections: ConnectionOptions::default(),
            health,
            health_service: boxed(health_server),
        }
    }

    /// Adds a handler's methods. Fails if a method is already served.
    pub fn handle(mut self, handler: Handler) -> Result<Self, ServiceError> {
        let full = handler.full_name();
        for (method, _) in &handler.methods {
            for key in [
                format!("/{full}/{method}"),
                format!("{}/{method}", handler.service),
            ] {
                if self.routes.contains_key(&key) {
                    return Err(ServiceError::Handler(format!(
                        "{key} is already served by another handler"
                    )));
                }
            }
        }
        for (method, route) in handler.methods {
            self.routes
                .insert(format!("/{full}/{method}"), Route(Arc::clone(&route)));
            self.routes
                .insert(format!("{}/{method}", handler.service), Route(route));
        }
        if let Some(descriptors) = handler.descriptors {
            self.descriptors.push(descriptors);
        }
        tracing::debug!(service = %full, "handler added");
        self.handlers.push(full);
        self.endpoints.extend(handler.endpoints);
        Ok(self)
    }

    /// Wraps every request in a tower layer (the last added runs first).
    ///
    /// ```
    /// use micro_core::Server;
    /// use micro_core::server::HttpService;
    ///
    /// // Any tower layer over an HttpService, e.g. a concurrency limit:
    /// let server = Server::new().layer(tower::limit::ConcurrencyLimitLayer::new(64));
    /// ```
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpService> + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers
            .push(Arc::new(move |inner| boxed(layer.layer(inner))));
        self
    }

    /// The largest message accepted or sent (default 4 MiB). A larger one is
    /// refused with RESOURCE_EXHAUSTED, checked before it is read.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long in-flight calls may finish after shutdown starts (default 5 s).
    /// A service exits at most half a second after it (see
    /// [`Service::run_until`](crate::Service::run_until)).
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// How long a new connection may take to send the HTTP/2 preface before it is
    /// closed (default 10 s; see [the module docs](self#connections)).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.connections.handshake_timeout = timeout;
        self
    }

    /// How long a connection may have no call open before the server tells it to go
    /// away (GOAWAY) and closes it (default 5 min); `None` keeps idle connections
    /// open. Calls in progress, streams included, keep a connection busy.
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = micro_core::Server::new().idle_timeout(Duration::from_secs(60));
    /// let forever = micro_core::Server::new().idle_timeout(None);
    /// ```
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connections.idle_timeout = timeout.into();
        self
    }

    /// PINGs a connection that has been silent for `interval`, and closes it if the
    /// answer takes longer than `timeout` (default 30 s and 10 s); an `interval` of
    /// `None` sends no PINGs. The timeout is also how long a connection closed for
    /// idleness has to acknowledge the GOAWAY.
    #[must_use]
    pub fn keep_alive(mut self, interval: impl Into<Option<Duration>>, timeout: Duration) -> Self {
        self.connections.keep_alive_interval = interval.into();
        self.connections.keep_alive_timeout = timeout;
        self
    }

    /// How many connections may be open at once (default 10,000). One more is closed
    /// as soon as it is accepted; refusals are counted and logged (a warning at most
    /// every 10 s, each one at debug level).
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.connections.max_connections = max;
        self
    }

    /// The endpoints of every handler, for the registry.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The gRPC service names served (`package.Service`).
    pub fn services(&self) -> &[String] {
        &self.handlers
    }

    /// Reports the server as a whole (`""`), the name it is registered under
    /// (`registry_name`, e.g. `go.micro.srv.greeter`) and every served proto service
    /// (`greeter.Greeter`) as serving or not, on `grpc.health.v1.Health`, all
    /// together. Any other name stays unknown (NOT_FOUND).
    pub(crate) async fn set_health(&self, registry_name: &str, serving: bool) {
        use tonic_health::ServingStatus;
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        if !registry_name.is_empty() {
            self.health.set_service_status(registry_name, status).await;
        }
        for name in &self.handlers {
            self.health.set_service_status(name, status).await;
        }
    }

    /// The paths it has routes for, each form (`/package.Service/Method` and
    /// `Service/Method`).
    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// The request-handling stack: routes and built-ins, wrapped in the layers.
    pub(crate) fn service(&self) -> Stack {
        let mut builtins = vec![("/grpc.health.v1.Health/", self.health_service.clone())];
        builtins.extend(self.reflection());
        let router = Router {
            routes: Arc::new(self.routes.clone()),
            builtins: Arc::new(builtins),
            limits: Limits {
                max_message_size: self.max_message_size,
            },
        };
        if self.layers.is_empty() {
            return Stack::Plain(router);
        }
        Stack::Layered(
            self.layers
                .iter()
                .fold(boxed(router), |inner, layer| layer(inner)),
        )
    }

    /// Reflection, v1 and v1alpha, over the descriptors of the served services.
    ///
    /// It lists exactly what this server answers: the services it has handlers for,
    /// `grpc.health.v1.Health` and reflection itself. A generated package carries the
    /// descriptors of every proto compiled with it, so services compiled alongside but
    /// not served are removed from the descriptors (their messages stay, as served
    /// methods may use them).
    fn reflection(&self) -> Vec<(&'static str, HttpService)> {
        let served: std::collections::HashSet<&str> =
            self.handlers.iter().map(String::as_str).collect();
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let builtins = [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        for (index, encoded) in self.descriptors.iter().chain(&builtins).enumerate() {
            let builtin = index >= self.descriptors.len();
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(*encoded)
            else {
                tracing::warn!("skipping an undecodable file descriptor set");
                continue;
            };
            // Each generated package carries the descriptors of all protos compiled
            // with it; take each file once.
            for mut file in set.file {
                if !seen.insert(file.name.clone()) {
                    continue;
                }
                if !builtin {
                    let package = file.package().to_string();
                    file.service.retain(|service| {
                        let name = if package.is_empty() {
                            service.name().to_string()
                        } else {
                            format!("{package}.{}", service.name())
                        };
                        served.contains(name.as_str())
                    });
                }
                files.push(file);
            }
        }
        let set = prost_types::FileDescriptorSet { file: files };
        let names = self
            .handlers
            .iter()
            .map(String::as_str)
            .chain(BUILTIN_SERVICES.iter().copied());
        let mut v1 = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_file_descriptor_set(set.clone());
        let mut v1alpha = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_file_descriptor_set(set);
        for name in names {
            v1 = v1.with_service_name(name);
            v1alpha = v1alpha.with_service_name(name);
        }
        let mut out = Vec::new();
        match (v1.build_v1(), v1alpha.build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                out.push(("/grpc.reflection.v1.ServerReflection/", boxed(v1)));
                out.push(("/grpc.reflection.v1alpha.ServerReflection/", boxed(v1alpha)));
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "gRPC reflection unavailable"),
        }
        out
    }

    pub(crate) fn grace(&self) -> Duration {
        self.grace_period
    }

    pub(crate) fn connection_options(&self) -> ConnectionOptions {
        self.connections
    }
}
