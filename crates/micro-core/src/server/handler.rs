//! A named set of endpoints (go-micro's `server.Handler`), built by generated code.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use micro_registry::{Endpoint, Value};
use micro_transport::{ProtoCodec, TonicCodec};
use tokio::time::Instant;

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
pub struct Handler {
    pub(crate) package: String,
    pub(crate) service: String,
    pub(crate) methods: Vec<(String, Arc<dyn Method>)>,
    pub(crate) endpoints: Vec<Endpoint>,
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

impl Handler {
    /// The proto package and service name, e.g. `("go.micro.srv.vessel", "VesselService")`.
    pub fn new(package: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            package: package.into(),
            service: service.into(),
            methods: Vec::new(),
            endpoints: Vec::new(),
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

    /// Adds a unary method served by `handler`; `request_type` and `response_type` name
    /// the messages in the registry's endpoint list.
    #[must_use]
    pub fn unary<Req, Resp, F, Fut>(
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
        self.endpoints.push(Endpoint {
            name: format!("{}.{method}", self.service),
            request: Some(Value::new(request_type, request_type)),
            response: Some(Value::new(response_type, response_type)),
            metadata: Default::default(),
        });
        let unary: Unary<Req, Resp, F> = Unary {
            handler,
            _types: PhantomData,
        };
        self.methods.push((method.to_string(), Arc::new(unary)));
        self
    }
}

struct Unary<Req, Resp, F> {
    handler: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F, Fut> Method for Unary<Req, Resp, F>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
    F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    fn call(&self, request: http::Request<Body>, limits: Limits) -> ResponseFuture {
        let service = UnaryCall::<Req, F> {
            handler: self.handler.clone(),
            _types: PhantomData,
        };
        Box::pin(async move {
            let codec: TonicCodec<ProtoCodec, Resp, Req> = TonicCodec::new(ProtoCodec);
            let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(
                Some(limits.max_message_size),
                Some(limits.max_message_size),
            );
            grpc.unary(service, request).await
        })
    }
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
        let ctx = context_of(&request);
        let handler = self.handler.clone();
        Box::pin(async move {
            let deadline = ctx.deadline();
            let work = handler(ctx, request.into_inner());
            let result = match deadline {
                Some(at) => match tokio::time::timeout_at(at, work).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::timeout(
                        "go.micro.server",
                        "handler deadline exceeded",
                    )),
                },
                None => work.await,
            };
            result
                .map(tonic::Response::new)
                .map_err(tonic::Status::from)
        })
    }
}

fn context_of<T>(request: &tonic::Request<T>) -> Context {
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
    Context::from_parts(Metadata::from_headers(&headers), deadline, remote)
}

/// The peer address of a connection, put in each request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct RemoteAddr(pub(crate) String);
