//! The server: routes gRPC requests to handlers and serves them over a transport.
//!
//! Routing matches the full gRPC path (`/go.micro.srv.vessel.VesselService/FindAvailable`)
//! and, failing that, the last segment of the service name (`VesselService/FindAvailable`),
//! as go-micro's gRPC server does: go-micro clients build the path from the *registry*
//! name (`/<registry name>.<Service>/<Method>`), which need not equal the proto package.
//!
//! Every server also answers `grpc.health.v1.Health` (tonic-health) and gRPC server
//! reflection v1 and v1alpha (tonic-reflection), so `grpcurl` and Kubernetes probes
//! work with no proto files at hand.
//!
//! Middleware is tower layers ([`Server::layer`]), applied to every request, built-in
//! services included; see the crate docs for a logging and an auth layer.

//!
//! The files: `handler` (a proto service's methods), `call` (serving one request),
//! `router` (dispatch by path), `serve` (connections and the graceful stop).

mod call;
mod handler;
mod router;
mod serve;

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
pub(crate) use self::serve::serve;
use crate::ServiceError;
use crate::codec::{BoxError, DEFAULT_MAX_MESSAGE_SIZE};

/// How long in-flight calls may run on after shutdown starts, by default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);

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
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
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

    /// Reports every served service (and the server as a whole, `""`) as serving or
    /// not, on `grpc.health.v1.Health`.
    pub(crate) async fn set_health(&self, serving: bool) {
        use tonic_health::ServingStatus;
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        for name in &self.handlers {
            self.health.set_service_status(name, status).await;
        }
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

    /// Reflection over every registered descriptor set, v1 and v1alpha.
    fn reflection(&self) -> Vec<(&'static str, HttpService)> {
        let mut v1 = tonic_reflection::server::Builder::configure();
        let mut v1alpha = tonic_reflection::server::Builder::configure();
        let mut seen = std::collections::HashSet::new();
        for encoded in &self.descriptors {
            // Each generated package carries the descriptors of all protos compiled with
            // it; register each file once.
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(*encoded)
            else {
                tracing::warn!("skipping an undecodable file descriptor set");
                continue;
            };
            let fresh: Vec<_> = set
                .file
                .into_iter()
                .filter(|f| seen.insert(f.name.clone()))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let set = prost_types::FileDescriptorSet { file: fresh };
            v1 = v1.register_file_descriptor_set(set.clone());
            v1alpha = v1alpha.register_file_descriptor_set(set);
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
}
