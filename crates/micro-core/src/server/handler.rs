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

use crate::{Context, Error, Metadata};

pub(crate) type Body = tonic::body::Body;
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>;

/// Serves one RPC method; object-safe so a router can hold any of them.
pub(crate) trait Method: Send + Sync + 'static {
    fn call(&self, request: http::Request<Body>, limits: Limits) -> ResponseFuture;
}

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

/// Serves a request with the JSON codec; only exists for serde types.
type JsonServe<F> = fn(F, http::Request<Body>, Limits) -> ResponseFuture;

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

    fn endpoint(&mut self, method: &str, request_type: &str, response_type: &str) {
        self.endpoints.push(Endpoint {
            name: format!("{}.{method}", self.service),
            request: Some(Value::new(request_type, request_type)),
            response: Some(Value::new(response_type, response_type)),
            metadata: Default::default(),
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
        Req: prost::Message
            + Default
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        Resp: prost::Message
            + Default
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type);
        let unary: Unary<Req, Resp, F> = Unary {
            handler,
            json: Some(serve::<JsonCodec, Req, Resp, F, Fut>),
            _types: PhantomData,
        };
        self.methods.push((method.to_string(), Arc::new(unary)));
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
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
        F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.endpoint(method, request_type, response_type);
        let unary: Unary<Req, Resp, F> = Unary {
            handler,
            json: None,
            _types: PhantomData,
        };
        self.methods.push((method.to_string(), Arc::new(unary)));
        self
    }
}

struct Unary<Req, Resp, F> {
    handler: F,
    json: Option<JsonServe<F>>,
    _types: PhantomData<fn(Req) -> Resp>,
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

impl<Req, Resp, F, Fut> Method for Unary<Req, Resp, F>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
    F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    fn call(&self, request: http::Request<Body>, limits: Limits) -> ResponseFuture {
        match subtype(request.headers()) {
            Subtype::Proto => {
                serve::<ProtoCodec, Req, Resp, F, Fut>(self.handler.clone(), request, limits)
            }
            Subtype::Json => match self.json {
                Some(serve_json) => serve_json(self.handler.clone(), request, limits),
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

/// Serves one unary request with codec `C`.
fn serve<C, Req, Resp, F, Fut>(
    handler: F,
    request: http::Request<Body>,
    limits: Limits,
) -> ResponseFuture
where
    C: Codec<Req> + Codec<Resp> + Default,
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    let service = UnaryCall::<Req, F> {
        handler,
        _types: PhantomData,
    };
    Box::pin(async move {
        let codec: TonicCodec<C, Resp, Req> = TonicCodec::new(C::default());
        let name = Codec::<Req>::name(&C::default());
        let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(
            Some(limits.max_message_size),
            Some(limits.max_message_size),
        );
        let mut response = grpc.unary(service, request).await;
        if name != "proto" {
            if let Ok(value) = http::HeaderValue::from_str(&format!("application/grpc+{name}")) {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, value);
            }
        }
        size_limit_is_resource_exhausted(response)
    })
}

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

struct UnaryCall<Req, F> {
    handler: F,
    _types: PhantomData<fn(Req)>,
}

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for UnaryCall<Req, F>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    type Response = Resp;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let cancelled = CancellationToken::new();
        let ctx = context_of(&request, cancelled.clone());
        let handler = self.handler.clone();
        Box::pin(async move {
            // Dropped unfinished (the caller went away, or the deadline passed): the
            // handler's context reports it as cancelled.
            let guard = cancelled.drop_guard();
            let deadline = ctx.deadline();
            let work = handler(ctx, request.into_inner());
            let result = match deadline {
                Some(at) => match tokio::time::timeout_at(at, work).await {
                    Ok(result) => result,
                    Err(_) => {
                        guard.disarm().cancel();
                        return Err(Error::timeout("go.micro.server", "deadline exceeded").into());
                    }
                },
                None => work.await,
            };
            guard.disarm();
            result
                .map(tonic::Response::new)
                .map_err(tonic::Status::from)
        })
    }
}

fn context_of<T>(request: &tonic::Request<T>, cancelled: CancellationToken) -> Context {
    let headers = request.metadata().clone().into_headers();
    let deadline = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(super::timeout::parse)
        .and_then(|d| Instant::now().checked_add(d));
    let remote = request
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0.clone());
    Context::from_parts(
        Metadata::from_headers(&headers),
        deadline,
        remote,
        cancelled,
    )
}

/// The peer address of a connection, put in each request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct RemoteAddr(pub(crate) String);
