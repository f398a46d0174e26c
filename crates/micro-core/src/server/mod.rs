//! The server: routes gRPC requests to handlers and serves them over a transport.
//!
//! Routing matches the full gRPC path (`/go.micro.srv.vessel.VesselService/FindAvailable`)
//! and, failing that, the last segment of the service name (`VesselService/FindAvailable`),
//! as go-micro's gRPC server does: go-micro clients build the path from the *registry*
//! name (`/<registry name>.<Service>/<Method>`), which need not equal the proto package.

mod handler;
pub(crate) mod timeout;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use micro_registry::Endpoint;
use micro_transport::Listener;

pub use self::handler::Handler;
use self::handler::{Body, Limits, Method, RemoteAddr, ResponseFuture};
use crate::Error;

/// gRPC's default message size limit, in each direction.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// How long in-flight calls may run on after shutdown starts, by default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Holds the handlers of a service and serves them.
///
/// A [`Service`](crate::Service) owns one; generated `register_*_handler` functions add
/// handlers to it.
#[derive(Debug)]
pub struct Server {
    routes: HashMap<String, Route>,
    handlers: Vec<String>,
    endpoints: Vec<Endpoint>,
    max_message_size: usize,
    grace_period: Duration,
}

#[derive(Clone)]
struct Route(Arc<dyn Method>);

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Route")
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with no handlers and the default limits.
    pub fn new() -> Self {
        Self {
            routes: HashMap::new(),
            handlers: Vec::new(),
            endpoints: Vec::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }

    /// Adds a handler's methods. Fails if a method is already served.
    pub fn handle(&mut self, handler: Handler) -> Result<(), Error> {
        let full = handler.full_name();
        let mut added = Vec::new();
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
                added.push(key);
            }
        }
        for (method, route) in handler.methods {
            self.routes
                .insert(format!("/{full}/{method}"), Route(Arc::clone(&route)));
            self.routes
                .insert(format!("{}/{method}", handler.service), Route(route));
        }
        tracing::debug!(service = %full, routes = added.len() / 2, "handler added");
        self.handlers.push(full);
        self.endpoints.extend(handler.endpoints);
        Ok(())
    }

    /// Sets the largest message accepted or sent (default 4 MiB).
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

    pub(crate) fn router(&self) -> Router {
        Router {
            routes: Arc::new(self.routes.clone()),
            limits: Limits {
                max_message_size: self.max_message_size,
            },
            remote: None,
        }
    }

    pub(crate) fn grace_period(&self) -> Duration {
        self.grace_period
    }
}

/// The tower service that dispatches a request to its method.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    routes: Arc<HashMap<String, Route>>,
    limits: Limits,
    remote: Option<Arc<str>>,
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

impl<B> tower::Service<http::Request<B>> for Router
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::Map<
        ResponseFuture,
        fn(http::Response<Body>) -> Result<http::Response<Body>, Infallible>,
    >;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures::FutureExt;
        let mut request = request.map(Body::new);
        if let Some(remote) = &self.remote {
            request
                .extensions_mut()
                .insert(RemoteAddr(remote.to_string()));
        }
        let future: ResponseFuture = match self.route(request.uri().path()) {
            Some(Route(method)) => method.call(request, self.limits),
            None => {
                let path = request.uri().path().to_string();
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
        };
        future.map(Ok as fn(_) -> _)
    }
}

/// Accepts connections until `shutdown` resolves, then lets in-flight calls finish
/// within `grace`.
pub(crate) async fn serve(
    mut listener: Box<dyn Listener>,
    router: Router,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
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
                let mut router = router.clone();
                router.remote = Some(Arc::from(accepted.remote.as_str()));
                let connection = builder.serve_connection(
                    TokioIo::new(accepted.io),
                    TowerToHyperService::new(router),
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
