//! Serving a listener: one hyper HTTP/2 connection per accepted stream, and the
//! graceful stop (stop accepting, then drain within the grace period).

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use micro_transport::Listener;
use tower::{Service, ServiceExt};

use super::call::{self, Body, RemoteAddr};
use super::router::Stack;
use crate::ServiceError;

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
        call::ResponseFuture,
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
) -> Result<(), ServiceError> {
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
                        return Err(ServiceError::Transport(e));
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
