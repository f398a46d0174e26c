//! A named set of endpoints (go-micro's `server.Handler`), built by generated code,
//! and how one unary method is served.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use micro_registry::{Endpoint, Value};
use micro_transport::{Codec, JsonCodec, ProtoCodec, TonicCodec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stream::{Receiver, STREAM_BUFFER, Sender};
use crate::{Context, Error, Metadata};

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

/// The endpoints of one proto service, ready to be added to a [`Server`](crate::Server).
///
/// Generated `register_*_handler` functions build these; write one by hand only to
/// serve a service without generated code.
///
/// ```
/// use micro_core::{server::Handler, Context, Error, Server};
///
/// #[derive(Clone, PartialEq, micro_core::prost::Message)]
/// struct Ping {
///     #[prost(string, tag = "1")]
///     msg: String,
/// }
///
/// let echo = Handler::new("demo", "Echo").unary_proto("Say", "Ping", "Ping", |_ctx: Context, req: Ping| async move {
///     Ok::<_, Error>(req)
/// });
/// let mut server = Server::new();
/// server.handle(echo)?;
/// assert_eq!(server.endpoints()[0].name, "Echo.Say");
/// # Ok::<(), Error>(())
/// ```
pub struct Handler {
    pub(crate) package: String,
    pub(crate) service: String,
    pub(crate) methods: Vec<(String, Arc<dyn Method>)>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) descriptors: Option<&'static [u8]>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("package", &self.package)
            .field("service", &self.service)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Serves one request with one codec, for handler `F`.
type ServeFn<F> = fn(F, http::Request<Body>, Limits, Remote) -> ResponseFuture;

/// What the codegen-facing methods below have in common: a handler, and how to serve
/// it with protobuf and (for serde messages) JSON.
macro_rules! add_method {
    ($self:ident, $method:ident, $handler:ident, $serve:ident, $json:expr, $stream:expr) => {{
        let served = Served {
            handler: $handler,
            proto: $serve::<ProtoCodec, Req, Resp, F, Fut>,
            json: $json,
        };
        $self.methods.push(($method.to_string(), Arc::new(served)));
    }};
}

impl Handler {
    /// The proto package and service name, e.g. `("go.micro.srv.vessel", "VesselService")`.
    pub fn new(package: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            package: package.into(),
            service: service.into(),
            methods: Vec::new(),
            endpoints: Vec::new(),
            descriptors: None,
        }
    }

    /// The gRPC service name: `package.Service`.
    pub fn full_name(&self) -> String {
        if self.package.is_empty() {
            self.service.clone()
        } else {
            format!("{}.{}", self.package, self.service)
        }
    }

    /// The encoded `FileDescriptorSet` of the protos, served by gRPC reflection.
    #[must_use]
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptors = Some(encoded);
        self
    }

    fn endpoint(&mut self, method: &str, request_type: &str, response_type: &str, stream: bool) {
        let mut metadata = std::collections::HashMap::new();
        if stream {
            // As go-micro marks streaming endpoints.
            metadata.insert("stream".to_string(), "true".to_string());
        }
        self.endpoints.push(Endpoint {
            name: format!("{}.{method}", self.service),
            request: Some(Value::new(request_type, request_type)),
            response: Some(Value::new(response_type, response_type)),
            metadata,
        });
    }

    /// Adds a unary method served by `handler`, callable with protobuf
    /// (`application/grpc`, `+proto`) and JSON (`application/grpc+json`).
    /// `request_type` and `response_type` name the messages in the registry.
    #[must_use]
    pub fn unary<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, false);
        add_method!(
            self,
            method,
            handler,
            serve_unary,
            Some(serve_unary::<JsonCodec, Req, Resp, F, Fut>),
            false
        );
        self
    }

    /// Like [`Handler::unary`], for messages without serde: protobuf only, and
    /// `application/grpc+json` requests get UNIMPLEMENTED.
    #[must_use]
    pub fn unary_proto<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, false);
        add_method!(self, method, handler, serve_unary, None, false);
        self
    }

    /// Adds a server-streaming method: one request in, a stream of responses out,
    /// sent by the handler through a [`Sender`]. Protobuf and JSON.
    #[must_use]
    pub fn server_streaming<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        F: Fn(Context, Req, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(
            self,
            method,
            handler,
            serve_server_streaming,
            Some(serve_server_streaming::<JsonCodec, Req, Resp, F, Fut>),
            true
        );
        self
    }

    /// [`Handler::server_streaming`] for messages without serde: protobuf only.
    #[must_use]
    pub fn server_streaming_proto<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        F: Fn(Context, Req, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(self, method, handler, serve_server_streaming, None, true);
        self
    }

    /// Adds a client-streaming method: a stream of requests in, read from a
    /// [`Receiver`], one response out. Protobuf and JSON.
    #[must_use]
    pub fn client_streaming<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        F: Fn(Context, Receiver<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(
            self,
            method,
            handler,
            serve_client_streaming,
            Some(serve_client_streaming::<JsonCodec, Req, Resp, F, Fut>),
            true
        );
        self
    }

    /// [`Handler::client_streaming`] for messages without serde: protobuf only.
    #[must_use]
    pub fn client_streaming_proto<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        F: Fn(Context, Receiver<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(self, method, handler, serve_client_streaming, None, true);
        self
    }

    /// Adds a bidirectional streaming method: requests read from a [`Receiver`],
    /// responses sent through a [`Sender`], both at once. Protobuf and JSON.
    #[must_use]
    pub fn streaming<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        F: Fn(Context, Receiver<Req>, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(
            self,
            method,
            handler,
            serve_streaming,
            Some(serve_streaming::<JsonCodec, Req, Resp, F, Fut>),
            true
        );
        self
    }

    /// [`Handler::streaming`] for messages without serde: protobuf only.
    #[must_use]
    pub fn streaming_proto<Req, Resp, F, Fut>(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        F: Fn(Context, Receiver<Req>, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type, true);
        add_method!(self, method, handler, serve_streaming, None, true);
        self
    }
}

/// Messages that can travel as JSON: serde both ways (generated messages are, by
/// default).
pub trait Json: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}

impl<T> Json for T where T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}

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
                    "application/grpc+json (this endpoint's messages have no serde derives)",
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

/// tonic reports a message over the size limit as OUT_OF_RANGE; gRPC's rule (and
/// go-micro's clients) say RESOURCE_EXHAUSTED. The limit is checked on the length
/// prefix, before anything is allocated.
fn size_limit_is_resource_exhausted(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("message length too large"));
    if too_large {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
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
    if let std::task::Poll::Ready(result) = futures::poll!(work.as_mut()) {
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
    ctx: &Context,
    cancelled: CancellationToken,
    work: impl Future<Output = Result<Resp, Error>> + Send + 'static,
) -> UnaryFuture<Resp> {
    let deadline = ctx.deadline();
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
        respond(
            &ctx.clone(),
            cancelled,
            (self.handler)(ctx, request.into_inner()),
        )
    }
}

/// The request stream as a [`Receiver`].
fn requests<Req: Send + 'static>(stream: tonic::Streaming<Req>) -> Receiver<Req> {
    use futures::StreamExt;
    Receiver::new(stream.map(|item| item.map_err(Error::from)), None)
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
        respond(&ctx.clone(), cancelled, (self.handler)(ctx, requests))
    }
}

/// The response stream of a streaming call: the handler's messages, and a final
/// error if it failed. Dropping it (the caller went away) cancels the context.
pub(crate) struct ResponseStream<Resp> {
    inner: tokio_stream::wrappers::ReceiverStream<Result<Resp, tonic::Status>>,
    _cancel_on_drop: tokio_util::sync::DropGuard,
}

impl<Resp> futures::Stream for ResponseStream<Resp> {
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
    tokio::spawn(async move {
        if let Err(e) = within_deadline(deadline, guard, work).await {
            let _ = tx.send(Err(tonic::Status::from(e))).await;
        }
    });
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
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(super::timeout::parse)
        .and_then(|d| Instant::now().checked_add(d));
    Context::from_parts(
        Metadata::from_headers(&headers),
        deadline,
        remote,
        cancelled,
    )
}

/// The peer address of a connection, in a request's extensions while it passes
/// through server layers.
#[derive(Clone, Debug)]
pub(crate) struct RemoteAddr(pub(crate) Arc<str>);
