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

mod handler;
pub(crate) mod timeout;

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use micro_registry::Endpoint;
use micro_transport::Listener;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use self::handler::{Body, Limits, Method, RemoteAddr};
pub use self::handler::{Handler, Json};
use crate::Error;

/// gRPC's default message size limit, in each direction.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// How long in-flight calls may run on after shutdown starts, by default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Boxed errors, as tower middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP service a server layer wraps: gRPC requests in, responses out.
pub type HttpService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

type LayerFn = Arc<dyn Fn(HttpService) -> HttpService + Send + Sync>;

/// Holds the handlers of a service and serves them.
///
/// A [`Service`](crate::Service) owns one; generated `register_*_handler` functions add
/// handlers to it.
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

#[derive(Clone)]
struct Route(Arc<dyn Method>);

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
    pub fn handle(&mut self, handler: Handler) -> Result<(), Error> {
        let full = handler.full_name();
        for (method, _) in &handler.methods {
            for key in [
                format!("/{full}/{method}"),
                format!("{}/{method}", handler.service),
            ] {
                if self.routes.contains_key(&key) {
                    return Err(Error::internal_server_error(
                        "go.micro.server",
                        format!("{key} is already served by another handler"),
                    ));
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
        Ok(())
    }

    /// Wraps every request in a tower layer (the last added runs first).
    ///
    /// ```
    /// use micro_core::Server;
    /// use micro_core::server::HttpService;
    ///
    /// let mut server = Server::new();
    /// // Any tower layer over an HttpService, e.g. a concurrency limit:
    /// server.layer(tower::limit::ConcurrencyLimitLayer::new(64));
    /// ```
    pub fn layer<L>(&mut self, layer: L) -> &mut Self
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

    /// Sets the largest message accepted or sent (default 4 MiB). A larger one is
    /// refused with RESOURCE_EXHAUSTED, checked before it is read.
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message_size = bytes;
    }

    /// Sets how long in-flight calls may finish after shutdown starts (default 5 s).
    pub fn set_grace_period(&mut self, grace: Duration) {
        self.grace_period = grace;
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

    pub(crate) fn grace_period(&self) -> Duration {
        self.grace_period
    }
}

/// The tower service that dispatches a request to its method.
#[derive(Clone)]
pub(crate) struct Router {
    routes: Arc<HashMap<String, Route>>,
    builtins: Arc<Vec<(&'static str, HttpService)>>,
    limits: Limits,
}

impl Router {
    fn route(&self, path: &str) -> Option<&Route> {
        if let Some(route) = self.routes.get(path) {
            return Some(route);
        }
        // `/any.prefix.Service/Method` -> `Service/Method`
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let short = service.rsplit('.').next()?;
        self.routes.get(&format!("{short}/{method}"))
    }
}

impl Router {
    /// Serves one request: a route, a built-in service, or UNIMPLEMENTED.
    fn dispatch(
        &self,
        request: http::Request<Body>,
        remote: handler::Remote,
    ) -> handler::ResponseFuture {
        let path = request.uri().path();
        if let Some(Route(method)) = self.route(path) {
            return method.call(request, self.limits, remote);
        }
        if let Some((_, builtin)) = self
            .builtins
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        {
            let builtin = builtin.clone();
            return Box::pin(async move {
                match builtin.oneshot(request).await {
                    Ok(response) => response,
                    Err(e) => tonic::Status::internal(e.to_string()).into_http(),
                }
            });
        }
        let path = path.to_string();
        Box::pin(async move {
            let service = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            tonic::Status::unimplemented(format!("unknown service {service} (path {path})"))
                .into_http()
        })
    }
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::Map<
        handler::ResponseFuture,
        fn(http::Response<Body>) -> Result<http::Response<Body>, BoxError>,
    >;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Behind layers the caller's address travels in the extensions.
        let remote = request.extensions_mut().remove::<RemoteAddr>().map(|r| r.0);
        self.dispatch(request, remote).map(Ok as fn(_) -> _)
    }
}

/// The request-handling stack: the router itself when there are no layers (no boxing
/// per request), else the layers around it.
#[derive(Clone)]
pub(crate) enum Stack {
    Plain(Router),
    Layered(HttpService),
}

/// The hyper-facing service of one connection: adds the peer address, and turns a
/// layer's error into a gRPC status instead of a broken connection.
#[derive(Clone)]
struct Connection {
    inner: Stack,
    remote: Arc<str>,
}

impl Service<http::Request<hyper::body::Incoming>> for Connection {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture2;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        match &self.inner {
            Stack::Plain(router) => futures::future::Either::Left(
                router
                    .dispatch(request, Some(Arc::clone(&self.remote)))
                    .map(Ok as fn(_) -> _),
            ),
            Stack::Layered(stack) => {
                request
                    .extensions_mut()
                    .insert(RemoteAddr(Arc::clone(&self.remote)));
                let stack = stack.clone();
                futures::future::Either::Right(
                    async move {
                        Ok(match stack.oneshot(request).await {
                            Ok(response) => response,
                            Err(e) => match e.downcast::<tonic::Status>() {
                                Ok(status) => status.into_http(),
                                Err(e) => tonic::Status::internal(e.to_string()).into_http(),
                            },
                        })
                    }
                    .boxed(),
                )
            }
        }
    }
}

type ResponseFuture2 = futures::future::Either<
    futures::future::Map<
        handler::ResponseFuture,
        fn(http::Response<Body>) -> Result<http::Response<Body>, std::convert::Infallible>,
    >,
    futures::future::BoxFuture<'static, Result<http::Response<Body>, std::convert::Infallible>>,
>;

/// Accepts connections until `shutdown` resolves, then lets in-flight calls finish
/// within `grace`. Returns once the listener is closed and the calls are done.
pub(crate) async fn serve(
    mut listener: Box<dyn Listener>,
    service: Stack,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(None);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let accepted = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "listener failed");
                        return Err(e.into());
                    }
                };
                let connection = Connection {
                    inner: service.clone(),
                    remote: Arc::from(accepted.remote.as_str()),
                };
                let connection = builder.serve_connection(
                    TokioIo::new(accepted.io),
                    TowerToHyperService::new(connection),
                );
                let connection = graceful.watch(connection);
                let remote = accepted.remote;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    // Stop accepting first, then drain.
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight calls did not finish within the grace period"
        );
    }
    Ok(())
}
