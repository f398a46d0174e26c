//! How one request is served: the codec its content-type names, tonic's server for
//! its RPC shape, the handler's [`Context`] (metadata, deadline, caller, cancellation)
//! and the deadline enforced around the handler.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use micro_transport::{Codec, ProtoCodec, TonicCodec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{Message, MessageJsonCodec};
use crate::stream::{Receiver, STREAM_BUFFER, Sender};
use crate::{Context, Error, Metadata, grpc_timeout};

pub(crate) type Body = tonic::body::Body;
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>;

/// Serves one RPC method; object-safe so a router can hold any of them.
pub(crate) trait Method: Send + Sync + 'static {
    fn call(&self, request: http::Request<Body>, limits: Limits, remote: Remote) -> ResponseFuture;
}

/// The caller's address, handed down with each request (not in its extensions: that
/// would allocate an extension map per request).
pub(crate) type Remote = Option<Arc<str>>;

/// Per-server limits applied to every call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
}

/// Serves one request with one codec, for handler `F`.
type ServeFn<F> = fn(F, http::Request<Body>, Limits, Remote) -> ResponseFuture;

/// One method: its handler, and how to serve it with each codec.
struct Served<F> {
    handler: F,
    proto: ServeFn<F>,
    json: Option<ServeFn<F>>,
}

/// The codec a request asks for, from `content-type` (then go-micro's `x-content-type`).
enum Subtype {
    Proto,
    Json,
    Other(String),
}

fn subtype(headers: &http::HeaderMap) -> Subtype {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .or_else(|| headers.get("x-content-type"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/grpc");
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/grpc"
        | "application/grpc+proto"
        | "application/protobuf"
        | "application/proto" => Subtype::Proto,
        "application/grpc+json" | "application/json" => Subtype::Json,
        other => Subtype::Other(other.to_string()),
    }
}

impl<F> Method for Served<F>
where
    F: Clone + Send + Sync + 'static,
{
    fn call(&self, request: http::Request<Body>, limits: Limits, remote: Remote) -> ResponseFuture {
        match subtype(request.headers()) {
            Subtype::Proto => (self.proto)(self.handler.clone(), request, limits, remote),
            Subtype::Json => match self.json {
                Some(serve_json) => serve_json(self.handler.clone(), request, limits, remote),
                None => unsupported(
                    "application/grpc+json (this endpoint's messages have no JSON form)",
                ),
            },
            Subtype::Other(other) => unsupported(&other),
        }
    }
}

fn unsupported(content_type: &str) -> ResponseFuture {
    let status =
        tonic::Status::unimplemented(format!("content-type {content_type} is not supported"));
    Box::pin(async move { status.into_http() })
}

/// A tonic server with codec `C` and the server's limits.
fn grpc<C, Req, Resp>(limits: Limits) -> tonic::server::Grpc<TonicCodec<C, Resp, Req>>
where
    C: Codec<Req> + Codec<Resp> + Default,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    tonic::server::Grpc::new(TonicCodec::new(C::default()))
        .apply_max_message_size_config(Some(limits.max_message_size), Some(limits.max_message_size))
}

/// Names the codec in the response and maps the size-limit status.
fn finish<C: Codec<Req> + Default, Req>(
    mut response: http::Response<Body>,
) -> http::Response<Body> {
    let name = Codec::<Req>::name(&C::default());
    if name != "proto" {
        if let Ok(value) = http::HeaderValue::from_str(&format!("application/grpc+{name}")) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
    }
    size_limit_is_resource_exhausted(response)
}

/// Defines `serve_*`: serves one request of an RPC shape with codec `C`, through
/// tonic's server for that shape. The shapes differ only in the handler's arguments
/// and result.
macro_rules! serve_fn {
    ($name:ident, $shape:ident, ($($arg:ty),*) -> $output:ty) => {
        fn $name<C, Req, Resp, F, Fut>(
            handler: F,
            request: http::Request<Body>,
            limits: Limits,
            remote: Remote,
        ) -> ResponseFuture
        where
            C: Codec<Req> + Codec<Resp> + Default,
            Req: Send + 'static,
            Resp: Send + 'static,
            F: Fn(Context, $($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<$output, Error>> + Send + 'static,
        {
            Box::pin(async move {
                let call = Call::<Req, Resp, F> {
                    handler,
                    remote,
                    _types: PhantomData,
                };
                finish::<C, Req>(grpc::<C, Req, Resp>(limits).$shape(call, request).await)
            })
        }
    };
}

serve_fn!(serve_unary, unary, (Req) -> Resp);
serve_fn!(serve_server_streaming, server_streaming, (Req, Sender<Resp>) -> ());
serve_fn!(serve_client_streaming, client_streaming, (Receiver<Req>) -> Resp);
serve_fn!(serve_streaming, streaming, (Receiver<Req>, Sender<Resp>) -> ());

/// Defines the constructor of a method of one RPC shape: served by `handler` with
/// protobuf, and with JSON when both messages have a JSON form.
macro_rules! method_fn {
    ($name:ident, $serve:ident, ($($arg:ty),*) -> $output:ty) => {
        pub(crate) fn $name<Req, Resp, F, Fut>(handler: F) -> Arc<dyn Method>
        where
            Req: Message,
            Resp: Message,
            F: Fn(Context, $($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<$output, Error>> + Send + 'static,
        {
            let json = Req::HAS_JSON && Resp::HAS_JSON;
            Arc::new(Served {
                handler,
                proto: $serve::<ProtoCodec, Req, Resp, F, Fut>,
                json: json.then_some($serve::<MessageJsonCodec, Req, Resp, F, Fut> as ServeFn<F>),
            })
        }
    };
}

method_fn!(unary, serve_unary, (Req) -> Resp);
method_fn!(server_streaming, serve_server_streaming, (Req, Sender<Resp>) -> ());
method_fn!(client_streaming, serve_client_streaming, (Receiver<Req>) -> Resp);
method_fn!(streaming, serve_streaming, (Receiver<Req>, Sender<Resp>) -> ());

/// The gRPC status header (and trailer), made at compile time: a `&str` would be
/// checked and parsed on every lookup.
pub(crate) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// OUT_OF_RANGE, as the status header spells it.
const OUT_OF_RANGE: &str = "11";
/// RESOURCE_EXHAUSTED, as the status header spells it.
const RESOURCE_EXHAUSTED: http::HeaderValue = http::HeaderValue::from_static("8");

/// tonic reports a message over the size limit as OUT_OF_RANGE: a request's in the
/// response headers (the limit is checked on the length prefix, before anything is
/// allocated), a response's in the trailers. gRPC's rule (and go-micro's and
/// grpc-go's clients) say RESOURCE_EXHAUSTED.
///
/// The status code alone tells: a handler's [`Error`] never becomes OUT_OF_RANGE
/// (no HTTP-style code maps to it), so in a response of tonic's server for one of
/// our handlers, OUT_OF_RANGE is tonic's size limit. No message text is read (on the
/// wire it is percent-encoded, and tonic's wording may change).
fn size_limit_is_resource_exhausted(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers_mut();
    if headers.contains_key(GRPC_STATUS) {
        // Trailers-only: the status is all there is.
        out_of_range_is_resource_exhausted(headers);
        return response;
    }
    response.map(|body| Body::new(SizeLimitTrailers(body)))
}

/// Rewrites a status of OUT_OF_RANGE as RESOURCE_EXHAUSTED.
fn out_of_range_is_resource_exhausted(headers: &mut http::HeaderMap) {
    if headers
        .get(GRPC_STATUS)
        .is_some_and(|status| status == OUT_OF_RANGE)
    {
        headers.insert(GRPC_STATUS, RESOURCE_EXHAUSTED);
    }
}

/// A response body whose trailers go through [`out_of_range_is_resource_exhausted`].
struct SizeLimitTrailers(Body);

impl http_body::Body for SizeLimitTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut frame = std::task::ready!(Pin::new(&mut self.0).poll_frame(cx));
        if let Some(Ok(frame)) = &mut frame {
            if let Some(trailers) = frame.trailers_mut() {
                out_of_range_is_resource_exhausted(trailers);
            }
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Runs `work` within the context's deadline; past it, the call is a timeout and the
/// context is cancelled.
async fn within_deadline<T>(
    deadline: Option<Instant>,
    guard: tokio_util::sync::DropGuard,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut work = std::pin::pin!(work);
    // Most handlers answer without waiting on anything: those need no timer.
    if let std::task::Poll::Ready(result) = futures_util::poll!(work.as_mut()) {
        guard.disarm();
        return result;
    }
    let result = match deadline {
        Some(at) => match tokio::time::timeout_at(at, work).await {
            Ok(result) => result,
            Err(_) => {
                guard.disarm().cancel();
                return Err(Error::timeout("go.micro.server", "deadline exceeded"));
            }
        },
        None => work.await,
    };
    guard.disarm();
    result
}

/// One request for `handler`: tonic's service for each RPC shape.
struct Call<Req, Resp, F> {
    handler: F,
    remote: Remote,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F> Call<Req, Resp, F> {
    /// The handler's context for `request`, and the token that cancels it.
    fn context<T>(&self, request: &mut tonic::Request<T>) -> (Context, CancellationToken) {
        let cancelled = CancellationToken::new();
        let ctx = context_of(request, cancelled.clone(), self.remote.clone());
        (ctx, cancelled)
    }
}

type UnaryFuture<Resp> =
    Pin<Box<dyn Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send>>;

/// One response from `work`, within the context's deadline. Dropped unfinished (the
/// caller went away), the context reports it.
fn respond<Resp>(
    deadline: Option<Instant>,
    cancelled: CancellationToken,
    work: impl Future<Output = Result<Resp, Error>> + Send + 'static,
) -> UnaryFuture<Resp> {
    Box::pin(async move {
        let guard = cancelled.drop_guard();
        within_deadline(deadline, guard, work)
            .await
            .map(tonic::Response::new)
            .map_err(tonic::Status::from)
    })
}

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for Call<Req, Resp, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    type Response = Resp;
    type Future = UnaryFuture<Resp>;

    fn call(&mut self, mut request: tonic::Request<Req>) -> Self::Future {
        let (ctx, cancelled) = self.context(&mut request);
        let deadline = ctx.deadline();
        respond(
            deadline,
            cancelled,
            (self.handler)(ctx, request.into_inner()),
        )
    }
}

/// The request stream as a [`Receiver`]. A message over the size limit is
/// RESOURCE_EXHAUSTED (429), as for a unary request (tonic says OUT_OF_RANGE).
fn requests<Req: Send + 'static>(stream: tonic::Streaming<Req>) -> Receiver<Req> {
    use futures_util::StreamExt;
    Receiver::new(
        stream.map(|item| {
            item.map_err(|status| match status.code() {
                tonic::Code::OutOfRange => {
                    Error::from(tonic::Status::resource_exhausted(status.message()))
                }
                _ => Error::from(status),
            })
        }),
        None,
    )
}

impl<Req, Resp, F, Fut> tonic::server::ClientStreamingService<Req> for Call<Req, Resp, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Receiver<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    type Response = Resp;
    type Future = UnaryFuture<Resp>;

    fn call(&mut self, mut request: tonic::Request<tonic::Streaming<Req>>) -> Self::Future {
        let (ctx, cancelled) = self.context(&mut request);
        let requests = requests(request.into_inner());
        let deadline = ctx.deadline();
        respond(deadline, cancelled, (self.handler)(ctx, requests))
    }
}

/// The response stream of a streaming call: the handler's messages, and a final
/// error if it failed. Dropping it (the caller went away) cancels the context.
pub(crate) struct ResponseStream<Resp> {
    inner: tokio_stream::wrappers::ReceiverStream<Result<Resp, tonic::Status>>,
    _cancel_on_drop: tokio_util::sync::DropGuard,
}

impl<Resp> futures_util::Stream for ResponseStream<Resp> {
    type Item = Result<Resp, tonic::Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

type StreamFuture<Resp> =
    std::future::Ready<Result<tonic::Response<ResponseStream<Resp>>, tonic::Status>>;

/// Runs a streaming handler on its own task, within the context's deadline, feeding
/// a response stream.
fn spawn_streaming<Resp, Fut>(
    ctx: &Context,
    cancelled: CancellationToken,
    run: impl FnOnce(Sender<Resp>) -> Fut,
) -> StreamFuture<Resp>
where
    Resp: Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let work = run(Sender::new(tx.clone()));
    let deadline = ctx.deadline();
    // Past the deadline this cancels the context; the stream's own guard cancels it
    // when the caller goes away.
    let guard = cancelled.clone().drop_guard();
    // In the call's span, as the handler would be were it not on its own task.
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = within_deadline(deadline, guard, work).await {
                let _ = tx.send(Err(tonic::Status::from(e))).await;
            }
        },
        ctx.span(),
    ));
    std::future::ready(Ok(tonic::Response::new(ResponseStream {
        inner: tokio_stream::wrappers::ReceiverStream::new(rx),
        _cancel_on_drop: cancelled.drop_guard(),
    })))
}

impl<Req, Resp, F, Fut> tonic::server::ServerStreamingService<Req> for Call<Req, Resp, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Req, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    type Response = Resp;
    type ResponseStream = ResponseStream<Resp>;
    type Future = StreamFuture<Resp>;

    fn call(&mut self, mut request: tonic::Request<Req>) -> Self::Future {
        let (ctx, cancelled) = self.context(&mut request);
        let handler = self.handler.clone();
        spawn_streaming(&ctx.clone(), cancelled, move |sender| {
            handler(ctx, request.into_inner(), sender)
        })
    }
}

impl<Req, Resp, F, Fut> tonic::server::StreamingService<Req> for Call<Req, Resp, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Receiver<Req>, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    type Response = Resp;
    type ResponseStream = ResponseStream<Resp>;
    type Future = StreamFuture<Resp>;

    fn call(&mut self, mut request: tonic::Request<tonic::Streaming<Req>>) -> Self::Future {
        let (ctx, cancelled) = self.context(&mut request);
        let handler = self.handler.clone();
        spawn_streaming(&ctx.clone(), cancelled, move |sender| {
            handler(ctx, requests(request.into_inner()), sender)
        })
    }
}

/// The handler's view of a request: its metadata and deadline, read from the headers
/// (taken out of the request, not copied), its caller, and its cancellation.
fn context_of<T>(
    request: &mut tonic::Request<T>,
    cancelled: CancellationToken,
    remote: Remote,
) -> Context {
    let headers = std::mem::take(request.metadata_mut()).into_headers();
    let deadline = headers
        .get(grpc_timeout::HEADER_NAME)
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout::parse)
        .and_then(|d| Instant::now().checked_add(d));
    // The server span, entered while the call is dispatched and polled.
    Context::from_parts(
        Metadata::from_headers(&headers),
        deadline,
        remote,
        cancelled,
    )
    .with_span(tracing::Span::current())
}

/// The peer address of a connection, in a request's extensions while it passes
/// through server layers.
#[derive(Clone, Debug)]
pub(crate) struct RemoteAddr(pub(crate) Arc<str>);
