//! A named set of endpoints (go-micro's `server.Handler`), built by generated code.

use std::future::Future;
use std::sync::Arc;

use micro_registry::{Endpoint, Value};

use super::call::{self, Method};
use crate::codec::Message;
use crate::stream::{Receiver, Sender};
use crate::{Context, Error};

/// The endpoints of one proto service, ready to be added to a [`Server`](crate::Server).
///
/// Generated `*_handler` functions build these; write one by hand only to serve a
/// service without generated code. Each method is served with protobuf, and with JSON
/// (`application/grpc+json`) when both its messages have a JSON form
/// ([`Message::HAS_JSON`]); otherwise JSON requests get UNIMPLEMENTED.
///
/// ```
/// use micro_core::{server::Handler, Context, Error, Server};
///
/// #[derive(Clone, PartialEq, micro_core::prost::Message)]
/// struct Ping {
///     #[prost(string, tag = "1")]
///     msg: String,
/// }
/// impl micro_core::Message for Ping {}
///
/// let echo = Handler::new("demo", "Echo").unary("Say", "Ping", "Ping", |_ctx: Context, req: Ping| async move {
///     Ok::<_, Error>(req)
/// });
/// let server = Server::new().handle(echo)?;
/// assert_eq!(server.endpoints()[0].name, "Echo.Say");
/// # Ok::<(), micro_core::ServiceError>(())
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

    fn add(
        mut self,
        method: &str,
        request_type: &str,
        response_type: &str,
        stream: bool,
        served: Arc<dyn Method>,
    ) -> Self {
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
        self.methods.push((method.to_string(), served));
        self
    }

    /// Adds a unary method served by `handler`. `request_type` and `response_type`
    /// name the messages in the registry.
    #[must_use]
    pub fn unary<Req, Resp, F, Fut>(
        self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        let served = call::unary::<Req, Resp, F, Fut>(handler);
        self.add(method, request_type, response_type, false, served)
    }

    /// Adds a server-streaming method: one request in, a stream of responses out,
    /// sent by the handler through a [`Sender`].
    #[must_use]
    pub fn server_streaming<Req, Resp, F, Fut>(
        self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Req, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let served = call::server_streaming::<Req, Resp, F, Fut>(handler);
        self.add(method, request_type, response_type, true, served)
    }

    /// Adds a client-streaming method: a stream of requests in, read from a
    /// [`Receiver`], one response out.
    #[must_use]
    pub fn client_streaming<Req, Resp, F, Fut>(
        self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Receiver<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        let served = call::client_streaming::<Req, Resp, F, Fut>(handler);
        self.add(method, request_type, response_type, true, served)
    }

    /// Adds a bidirectional streaming method: requests read from a [`Receiver`],
    /// responses sent through a [`Sender`], both at once.
    #[must_use]
    pub fn streaming<Req, Resp, F, Fut>(
        self,
        method: &str,
        request_type: &str,
        response_type: &str,
        handler: F,
    ) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(Context, Receiver<Req>, Sender<Resp>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let served = call::streaming::<Req, Resp, F, Fut>(handler);
        self.add(method, request_type, response_type, true, served)
    }
}
