//! Serving a listener: one hyper HTTP/2 connection per accepted stream, each with a
//! bounded life (handshake timeout, idle timeout, keep-alive pings, a cap on how many
//! are open), and the stop in three steps: refuse new calls, close the listener and
//! drain, cut off what is left at the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use micro_transport::{BoxedIo, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use super::call::{self, Body, RemoteAddr};
use super::on_wake::OnWake;
use super::router::Stack;
use super::span::Observed;
use crate::ServiceError;

/// The HTTP/2 client preface every connection starts with (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;

/// The path prefix of the health service, which still answers while stopping (it
/// says NOT_SERVING).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// How often a refused connection is reported, at most.
const REFUSED_REPORT_EVERY: Duration = Duration::from_secs(10);

/// How connections are bounded; see the [`Server`](super::Server) builder methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: super::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Some(super::DEFAULT_IDLE_TIMEOUT),
            keep_alive_interval: Some(super::DEFAULT_KEEP_ALIVE_INTERVAL),
            keep_alive_timeout: super::DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: super::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How the owner of a server stops it.
#[derive(Debug)]
pub(crate) struct Control {
    /// Cancelled when shutdown starts: from then on every new call (but health checks)
    /// is answered UNAVAILABLE at once, while the listener stays open until the
    /// registry has forgotten the node.
    pub(crate) refuse: CancellationToken,
    /// Resolves with the drain deadline: the listener closes, every connection is
    /// told to go away (GOAWAY) and calls in flight may finish until the deadline;
    /// then the connections left are closed. A dropped sender closes at once.
    pub(crate) close: oneshot::Receiver<Instant>,
    /// The registry name served, for the calls' spans (`micro.service`).
    pub(crate) served: Option<Arc<str>>,
    /// What the server's calls are labelled with in the metrics.
    pub(crate) scope: crate::observe::ServerScope,
}

/// Counts the calls open on one connection, for its idle timeout.
#[derive(Debug)]
struct Activity {
    /// Calls open now.
    open: AtomicUsize,
    /// When the last call ended, in milliseconds since `born`.
    idle_since_ms: AtomicU64,
    /// When the connection was accepted.
    born: Instant,
    /// Told when the last open call ends.
    idle: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            born: Instant::now(),
            idle: Notify::new(),
        }
    }

    fn millis_since_born(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once no call has been open on the connection for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            while self.open.load(Ordering::Acquire) > 0 {
                self.idle.notified().await;
            }
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let Some(at) = self
                .born
                .checked_add(Duration::from_millis(since))
                .and_then(|at| at.checked_add(timeout))
            else {
                // Too far away to ever come.
                return std::future::pending().await;
            };
            tokio::time::sleep_until(at).await;
            if self.open.load(Ordering::Acquire) == 0
                && self.idle_since_ms.load(Ordering::Acquire) == since
            {
                return;
            }
        }
    }
}

/// One open call on a connection; when the last one ends the connection is idle.
#[derive(Debug)]
struct CallGuard(Arc<Activity>);

impl CallGuard {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        // Set before the count drops, so whoever sees zero sees this time.
        activity
            .idle_since_ms
            .store(activity.millis_since_born(), Ordering::Release);
        if activity.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle.notify_one();
        }
    }
}

/// A response body that keeps its call open until it is sent or dropped, and
/// records the status its trailers carry on the call's span.
struct Tracked {
    inner: Body,
    _call: Option<CallGuard>,
    observed: Option<Observed>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(observed) = self.observed.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        observed.status_in(trailers);
                    }
                }
                Some(Err(status)) => observed.record(status.code()),
                None => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper-facing service of one connection: adds the peer address, refuses new
/// calls once the server is stopping, counts open calls for the idle timeout, and
/// turns a layer's error into a gRPC status instead of a broken connection.
#[derive(Clone)]
struct Connection {
    inner: Stack,
    remote: Arc<str>,
    refuse: CancellationToken,
    activity: Option<Arc<Activity>>,
    served: Option<Arc<str>>,
    scope: crate::observe::ServerScope,
}

/// The response to one call, with the guard that keeps the call open and the call's
/// span, entered while polled.
struct Respond {
    inner: ResponseInner,
    call: Option<CallGuard>,
    observed: Option<Observed>,
    metered: Option<crate::observe::ServerCall>,
}

enum ResponseInner {
    Plain(call::ResponseFuture),
    Layered(futures_util::future::BoxFuture<'static, http::Response<Body>>),
    Ready(Option<http::Response<Body>>),
}

impl Future for Respond {
    type Output = Result<http::Response<Body>, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let entered = this.observed.as_ref().map(|o| o.span().enter());
        let response = match &mut this.inner {
            ResponseInner::Plain(future) => ready!(future.as_mut().poll(cx)),
            ResponseInner::Layered(future) => ready!(future.as_mut().poll(cx)),
            ResponseInner::Ready(response) => match response.take() {
                Some(response) => response,
                None => tonic::Status::internal("response polled twice").into_http(),
            },
        };
        drop(entered);
        let response = crate::observe::server_response(this.metered.take(), response);
        let mut observed = this.observed.take();
        // Trailers-only (an error, or a refusal): the status is in the head.
        if observed
            .as_mut()
            .is_some_and(|o| o.status_in(response.headers()))
        {
            observed = None;
        }
        let call = this.call.take();
        Poll::Ready(Ok(if call.is_some() || observed.is_some() {
            response.map(|inner| {
                Body::new(Tracked {
                    inner,
                    _call: call,
                    observed,
                })
            })
        } else {
            response
        }))
    }
}

impl Service<http::Request<hyper::body::Incoming>> for Connection {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Respond;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let call = self.activity.as_ref().map(CallGuard::new);
        let observed = Observed::start(&request, &self.remote, self.served.as_deref());
        let metered = crate::observe::server_call(&self.scope, request.uri().path());
        if self.refuse.is_cancelled() && !request.uri().path().starts_with(HEALTH_PREFIX) {
            // Callers retry UNAVAILABLE on another node.
            let refused = tonic::Status::unavailable("server is shutting down").into_http();
            return Respond {
                inner: ResponseInner::Ready(Some(refused)),
                call,
                observed,
                metered,
            };
        }
        // The handler's context is made during dispatch: in the call's span.
        let entered = observed.as_ref().map(|o| o.span().enter());
        let mut request = request.map(Body::new);
        let inner = match &self.inner {
            Stack::Plain(router) => {
                ResponseInner::Plain(router.dispatch(request, Some(Arc::clone(&self.remote))))
            }
            Stack::Layered(stack) => {
                request
                    .extensions_mut()
                    .insert(RemoteAddr(Arc::clone(&self.remote)));
                let stack = stack.clone();
                ResponseInner::Layered(
                    async move {
                        match stack.oneshot(request).await {
                            Ok(response) => response,
                            Err(e) => match e.downcast::<tonic::Status>() {
                                Ok(status) => status.into_http(),
                                Err(e) => tonic::Status::internal(e.to_string()).into_http(),
                            },
                        }
                    }
                    .boxed(),
                )
            }
        };
        drop(entered);
        Respond {
            inner,
            call,
            observed,
            metered,
        }
    }
}

/// A connection's byte stream, which reports once the HTTP/2 preface has arrived.
struct Io {
    inner: BoxedIo,
    /// Preface bytes still to come.
    preface_left: usize,
    /// Told when they have.
    preface: Option<oneshot::Sender<()>>,
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.preface_left > 0 {
            let read = buf.filled().len().saturating_sub(before);
            self.preface_left = self.preface_left.saturating_sub(read);
            if self.preface_left == 0 {
                if let Some(preface) = self.preface.take() {
                    let _ = preface.send(());
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One open connection, counted while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections refused for the cap, reported at most every [`REFUSED_REPORT_EVERY`].
#[derive(Default)]
struct Refused {
    total: u64,
    unreported: u64,
    reported_at: Option<Instant>,
}

impl Refused {
    fn count(&mut self, max: usize, remote: &str) {
        self.total += 1;
        self.unreported += 1;
        tracing::debug!(%remote, max_connections = max, "connection refused: too many open");
        let due = self
            .reported_at
            .is_none_or(|at| at.elapsed() >= REFUSED_REPORT_EVERY);
        if due {
            tracing::warn!(
                max_connections = max,
                refused = self.unreported,
                refused_total = self.total,
                "connections refused: too many open"
            );
            self.unreported = 0;
            self.reported_at = Some(Instant::now());
        }
    }
}

/// Accepts connections until `shutdown` resolves, then lets in-flight calls finish
/// within `grace`, with the default connection bounds. Returns once the listener is
/// closed and the calls are done (or cut off).
pub(crate) async fn serve(
    listener: Box<dyn Listener>,
    service: Stack,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let refuse = CancellationToken::new();
    let (close, closed) = oneshot::channel();
    let serving = serve_with(
        listener,
        service,
        ConnectionOptions::default(),
        Control {
            refuse: refuse.clone(),
            close: closed,
            served: None,
            scope: Default::default(),
        },
    );
    tokio::pin!(serving, shutdown);
    tokio::select! {
        result = &mut serving => return result,
        () = &mut shutdown => {}
    }
    refuse.cancel();
    let _ = close.send(Instant::now() + grace);
    serving.await
}

/// Accepts connections until `control.close` resolves, then drains until its
/// deadline; see [`Control`].
pub(crate) async fn serve_with(
    mut listener: Box<dyn Listener>,
    service: Stack,
    options: ConnectionOptions,
    control: Control,
) -> Result<(), ServiceError> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(None)
        .timer(TokioTimer::new())
        .keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_timeout);
    let builder = Arc::new(builder);
    let open = Arc::new(AtomicUsize::new(0));
    let mut refused = Refused::default();
    let drain = CancellationToken::new();
    let mut connections = JoinSet::new();
    let Control {
        refuse,
        close,
        served,
        scope,
    } = control;
    tokio::pin!(close);
    let deadline = loop {
        tokio::select! {
            biased;
            deadline = &mut close => break deadline.unwrap_or_else(|_| Instant::now()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let accepted = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "listener failed");
                        drop(listener);
                        connections.shutdown().await;
                        return Err(ServiceError::Transport(e));
                    }
                };
                if open.load(Ordering::Acquire) >= options.max_connections {
                    // Closed at once: the peer sees the connection end.
                    refused.count(options.max_connections, &accepted.remote);
                    drop(accepted);
                    continue;
                }
                open.fetch_add(1, Ordering::AcqRel);
                let guard = Open(Arc::clone(&open));
                connections.spawn(connection(
                    accepted.io,
                    Arc::from(accepted.remote.as_str()),
                    Shared {
                        builder: Arc::clone(&builder),
                        service: service.clone(),
                        options,
                        refuse: refuse.clone(),
                        drain: drain.clone(),
                        served: served.clone(),
                        scope: scope.clone(),
                    },
                    guard,
                ));
            }
        }
    };
    // Stop accepting first, then drain until the deadline.
    drop(listener);
    refuse.cancel();
    drain.cancel();
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "calls in flight did not finish within the grace period; closing their connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What every connection of a server shares.
struct Shared {
    builder: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    service: Stack,
    options: ConnectionOptions,
    refuse: CancellationToken,
    drain: CancellationToken,
    served: Option<Arc<str>>,
    scope: crate::observe::ServerScope,
}

/// Serves one connection: drops it if the HTTP/2 preface does not come within the
/// handshake timeout, tells it to go away when it has been idle too long or the
/// server drains, and ends when hyper is done with it.
async fn connection(io: BoxedIo, remote: Arc<str>, shared: Shared, _open: Open) {
    let Shared {
        builder,
        service,
        options,
        refuse,
        drain,
        served,
        scope,
    } = shared;
    let (preface_tx, preface_rx) = oneshot::channel();
    let io = Io {
        inner: io,
        preface_left: PREFACE_LEN,
        preface: Some(preface_tx),
    };
    let activity = options.idle_timeout.map(|_| Arc::new(Activity::new()));
    let service = Connection {
        inner: service,
        remote: Arc::clone(&remote),
        refuse,
        activity: activity.clone(),
        served,
        scope,
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);

    let handshake = tokio::time::sleep(options.handshake_timeout);
    tokio::select! {
        biased;
        result = conn.as_mut() => return ended(&remote, result),
        () = drain.cancelled() => return,
        _ = preface_rx => {}
        () = handshake => {
            tracing::debug!(
                %remote,
                timeout = ?options.handshake_timeout,
                "no HTTP/2 preface within the handshake timeout; connection closed"
            );
            return;
        }
    }

    let idle_timeout = options.idle_timeout.unwrap_or(Duration::MAX);
    // A drain or an idle connection, watched beside the connection but polled only
    // when one of them woke the task, not on each of the connection's own wakes.
    let watch = OnWake::new(async {
        tokio::select! {
            biased;
            () = drain.cancelled() => Stop::Drain,
            () = async {
                match &activity {
                    Some(activity) => activity.idle_for(idle_timeout).await,
                    None => std::future::pending().await,
                }
            } => Stop::Idle,
        }
    });
    let stop = tokio::select! {
        biased;
        result = conn.as_mut() => return ended(&remote, result),
        stop = watch => stop,
    };
    conn.as_mut().graceful_shutdown();
    if let Stop::Drain = stop {
        return ended(&remote, conn.as_mut().await);
    }
    tracing::debug!(%remote, timeout = ?idle_timeout, "idle connection: going away");
    // Gone idle: the peer has a keep-alive timeout to acknowledge the GOAWAY (its
    // PING) and let the connection close; one that does not is closed here, unless a
    // call it started meanwhile is still open. A drain cuts this short too.
    let wait = async {
        if let Some(activity) = &activity {
            activity.idle_for(options.keep_alive_timeout).await;
        }
    };
    tokio::select! {
        biased;
        result = conn.as_mut() => ended(&remote, result),
        () = wait => tracing::debug!(%remote, "idle connection did not close after GOAWAY; closed"),
        () = drain.cancelled() => {
            // Draining: the server's deadline cuts it off; until then let it finish.
            let result = conn.as_mut().await;
            ended(&remote, result);
        }
    }
}

/// Why a connection's task stops serving as usual.
enum Stop {
    /// The server is draining: the connection goes away and finishes its calls.
    Drain,
    /// No call for the idle timeout: the connection goes away.
    Idle,
}

fn ended(remote: &str, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
