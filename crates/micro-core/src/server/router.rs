//! The router: dispatches a request to its method by gRPC path, or to a built-in
//! service (health, reflection), or answers UNIMPLEMENTED.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::FutureExt;
use tower::{Service, ServiceExt};

use super::HttpService;
use super::call::{self, Body, Limits, Method, RemoteAddr};
use crate::codec::BoxError;

/// One method, as the router holds it.
#[derive(Clone)]
pub(super) struct Route(pub(super) Arc<dyn Method>);

/// The tower service that dispatches a request to its method.
#[derive(Clone)]
pub(crate) struct Router {
    pub(super) routes: Arc<HashMap<String, Route>>,
    pub(super) builtins: Arc<Vec<(&'static str, HttpService)>>,
    pub(super) limits: Limits,
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
    pub(super) fn dispatch(
        &self,
        request: http::Request<Body>,
        remote: call::Remote,
    ) -> call::ResponseFuture {
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
    type Future = futures_util::future::Map<
        call::ResponseFuture,
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
