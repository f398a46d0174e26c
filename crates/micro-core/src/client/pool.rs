//! Connections: one pooled HTTP/2 connection per node, dialed through the transport,
//! wrapped in the client's layers, closed when the node leaves the registry.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};

use hyper_util::rt::TokioIo;
use micro_registry::{Action, WatchOptions};
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::error::LayerError;
use super::{Body, Client, HttpClient, Inner, lock, read, write};

impl Client {
    /// The pooled connection to `address` (layered, when the client has layers),
    /// created on first use.
    pub(super) fn connection(&self, address: &str) -> Result<Connection, tonic::Status> {
        if let Some(connection) = read(&self.inner.pool).get(address) {
            return Ok(connection.clone());
        }
        let mut pool = write(&self.inner.pool);
        if let Some(connection) = pool.get(address) {
            return Ok(connection.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|e| {
            tonic::Status::invalid_argument(format!("node address {address:?}: {e}"))
        })?;
        let transport = Arc::clone(&self.inner.transport);
        let target = address.to_string();
        let connector = tower::service_fn(move |_: http::Uri| {
            let transport = Arc::clone(&transport);
            let target = target.clone();
            async move { transport.dial(&target).await.map(TokioIo::new) }
        });
        let channel = SetContentType(endpoint.connect_with_connector_lazy(connector));
        let connection = if self.inner.layers.is_empty() {
            Connection::Plain(channel)
        } else {
            let base: HttpClient =
                BoxCloneSyncService::new(channel.map_err(|e| LayerError(Box::new(e))));
            Connection::Layered(
                self.inner
                    .layers
                    .iter()
                    .fold(base, |inner, layer| layer(inner)),
            )
        };
        pool.insert(address.to_string(), connection.clone());
        Ok(connection)
    }

    /// Drops the pooled connection to `address`.
    pub(super) fn forget(&self, address: &str) {
        write(&self.inner.pool).remove(address);
    }

    /// Closes connections to nodes that leave the registry (once per client).
    pub(super) async fn ensure_pruning(&self) {
        if self.inner.pruning.load(Ordering::Acquire)
            || self.inner.pruning.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(mut watcher) = self.inner.registry.watch(WatchOptions::default()).await else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let event = watcher.next().await;
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    Ok(event) if event.action == Action::Delete => {
                        let mut pool = write(&inner.pool);
                        for node in &event.service.nodes {
                            if pool.remove(&node.address).is_some() {
                                tracing::debug!(address = %node.address, "closing the connection to a node that left");
                            }
                        }
                        drop(pool);
                        let mut health = lock(&inner.health);
                        for node in &event.service.nodes {
                            health.forget(&node.address);
                        }
                    }
                    Ok(_) | Err(micro_registry::Error::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// One node's connection: the channel itself when the client has no layers (nothing
/// boxed per call), else the layers around it.
#[derive(Clone)]
pub(super) enum Connection {
    Plain(SetContentType<tonic::transport::Channel>),
    Layered(HttpClient),
}

type PlainFuture = futures_util::future::MapErr<
    <tonic::transport::Channel as Service<http::Request<Body>>>::Future,
    fn(tonic::transport::Error) -> LayerError,
>;

impl Service<http::Request<Body>> for Connection {
    type Response = http::Response<Body>;
    type Error = LayerError;
    type Future = futures_util::future::Either<
        PlainFuture,
        <HttpClient as Service<http::Request<Body>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), LayerError>> {
        match self {
            Connection::Plain(channel) => {
                channel.poll_ready(cx).map_err(|e| LayerError(Box::new(e)))
            }
            Connection::Layered(stack) => stack.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        match self {
            Connection::Plain(channel) => {
                futures_util::future::Either::Left(channel.call(request).map_err(
                    (|e| LayerError(Box::new(e))) as fn(tonic::transport::Error) -> LayerError,
                ))
            }
            Connection::Layered(stack) => futures_util::future::Either::Right(stack.call(request)),
        }
    }
}

/// The gRPC content subtype of a request (`proto`, `json`), for [`SetContentType`].
#[derive(Clone, Copy, Debug)]
pub(super) struct ContentSubtype(pub(super) &'static str);

/// tonic always sends `content-type: application/grpc`; this names the codec
/// actually used, as gRPC (and go-micro's server) expect.
#[derive(Clone)]
pub(super) struct SetContentType<S>(S);

impl<S, B> Service<http::Request<B>> for SetContentType<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        if let Some(ContentSubtype(subtype)) = request.extensions().get::<ContentSubtype>().copied()
        {
            if subtype != "proto" {
                if let Ok(value) =
                    http::HeaderValue::from_str(&format!("application/grpc+{subtype}"))
                {
                    request
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, value);
                }
            }
        }
        self.0.call(request)
    }
}
