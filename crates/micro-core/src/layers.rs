//! Middleware as tower layers: two that services commonly need, and the pattern for
//! writing more.
//!
//! Server layers wrap [`HttpService`](crate::server::HttpService) and are added with
//! [`Server::layer`](crate::Server::layer); client layers wrap
//! [`HttpClient`](crate::client::HttpClient) and are added with
//! [`ClientBuilder::layer`](crate::ClientBuilder::layer). Any tower layer whose service
//! keeps the request and response types fits (timeouts, concurrency limits, ...).
//!
//! ```
//! use micro_core::layers::{LogLayer, TokenAuthLayer};
//! use micro_core::Service;
//!
//! let service = Service::new("go.micro.srv.greeter")?
//!     .layer(TokenAuthLayer::new(["s3cret"])) // runs second
//!     .layer(LogLayer);                      // runs first: logs refused calls too
//! # Ok::<(), micro_core::ServiceError>(())
//! ```
//!
//! A caller then sends the token as metadata:
//! `CallOptions::new().metadata("authorization", "Bearer s3cret")`.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

type Body = tonic::body::Body;

/// Logs every request with `tracing`: path, gRPC status and duration, at `info`
/// (`warn` for errors).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Log<S> {
        Log { inner }
    }
}

/// The service [`LogLayer`] makes.
#[derive(Clone, Debug)]
pub struct Log<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Log<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Error: std::fmt::Display,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let started = Instant::now();
        let response = self.inner.call(request);
        async move {
            let result = response.await;
            let elapsed_us = started.elapsed().as_micros();
            match &result {
                // An error status comes in the headers ("trailers-only"); a success's
                // status follows the body, so no status header means the call went on.
                Ok(response) => match response
                    .headers()
                    .get(crate::server::call::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(code) if code != "0" => {
                        tracing::warn!(%path, grpc_status = code, elapsed_us, "rpc failed");
                    }
                    _ => tracing::info!(%path, elapsed_us, "rpc"),
                },
                Err(e) => tracing::warn!(%path, error = %e, elapsed_us, "rpc error"),
            }
            result
        }
        .boxed()
    }
}

/// Admits only requests whose `authorization` metadata is `Bearer <token>` for one of
/// the given tokens; others get UNAUTHENTICATED and never reach a handler. Health
/// checks (`grpc.health.v1.Health`) pass without a token, so probes keep working.
#[derive(Clone, Debug)]
pub struct TokenAuthLayer {
    tokens: Arc<HashSet<String>>,
    open_prefixes: Arc<Vec<String>>,
}

impl TokenAuthLayer {
    /// Accepts any of `tokens`.
    pub fn new<I, T>(tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            tokens: Arc::new(tokens.into_iter().map(Into::into).collect()),
            open_prefixes: Arc::new(vec!["/grpc.health.v1.Health/".to_string()]),
        }
    }

    /// Lets requests whose path starts with `prefix` through without a token.
    #[must_use]
    pub fn allow_path_prefix(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.open_prefixes).push(prefix.into());
        self
    }
}

impl<S> Layer<S> for TokenAuthLayer {
    type Service = TokenAuth<S>;

    fn layer(&self, inner: S) -> TokenAuth<S> {
        TokenAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TokenAuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct TokenAuth<S> {
    inner: S,
    layer: TokenAuthLayer,
}

impl<S, B> Service<http::Request<B>> for TokenAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let open = self
            .layer
            .open_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()));
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if open || token.is_some_and(|t| self.layer.tokens.contains(t)) {
            return self.inner.call(request).boxed();
        }
        let status = crate::Error::unauthorized("go.micro.auth", "missing or invalid token");
        let response = tonic::Status::from(status).into_http();
        async move { Ok(response) }.boxed()
    }
}
