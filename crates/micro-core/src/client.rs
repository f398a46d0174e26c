//! The client: calls services by name.
//!
//! A call resolves the service name through a cache of the registry, picks a node
//! with the [`Selector`] (random by default), and sends the request over a pooled
//! HTTP/2 connection to that node (one per node, reused; closed when the node leaves
//! the registry).
//!
//! # Deadlines and retries
//!
//! A call has one deadline: the earlier of its timeout (default 30 s, go-micro v4's)
//! and the deadline of the request being served, when the call is made from a
//! handler with `ctx.call_options()`. The server is told the time *remaining* in
//! `grpc-timeout` on every attempt. (go-micro sends its fixed request timeout
//! downstream instead, so a chain of calls can outlive its caller.)
//!
//! A call is retried, up to 5 times (go-micro v4's default) and never past its
//! deadline, when the node could not be reached (the request never left), or when it
//! answered UNAVAILABLE and another node is there to try. Each retry goes to a node
//! not yet tried when there is one, after go-micro's backoff (0.1 s, 0.6 s, 1.9 s,
//! ...). No other error is retried (go-micro v4 retries only its own timeouts; micro does not,
//! since a request that timed out may have run). A node that refused a connection is
//! passed over by later calls for 5 s.
//!
//! # Middleware
//!
//! [`ClientBuilder::layer`] wraps every request in a tower layer, between the gRPC
//! encoding and the connection: see the crate docs for examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use micro_registry::{Action, CachedRegistry, Node, Registry, WatchOptions};
use micro_transport::{Codec, JsonCodec, ProtoCodec, TonicCodec, Transport};
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::selector::{Random, Selector};
use crate::server::Json;
use crate::server::{BoxError, DEFAULT_MAX_MESSAGE_SIZE};
use crate::stream::Receiver;
use crate::{CallOptions, ContentType, Error};

/// How long a call may take by default, retries included (go-micro v4's value).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a call is retried after a connection failure or UNAVAILABLE
/// (go-micro v4's value).
pub const DEFAULT_RETRIES: usize = 5;
/// How long a node that refused a connection is passed over (unless no other is left).
/// Long enough to outlast an mDNS goodbye and a restart.
const REFUSED_FOR: Duration = Duration::from_secs(5);

/// go-micro's backoff before retry `attempt` (1-based): `100 ms * attempt^e`, whole
/// multiples of 100 ms: 100 ms, 600 ms, 1.9 s, 4.3 s, 7.9 s.
pub fn default_backoff(attempt: u32) -> Duration {
    let factor = f64::from(attempt).powf(std::f64::consts::E).floor();
    Duration::from_millis(100).mul_f64(factor.min(1200.0))
}

type Body = tonic::body::Body;

/// The HTTP service a client layer wraps: one node's connection.
pub type HttpClient = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, LayerError>;

type LayerFn = Arc<dyn Fn(HttpClient) -> HttpClient + Send + Sync>;

/// Builds a [`Client`].
pub struct ClientBuilder {
    registry: Arc<dyn Registry>,
    transport: Arc<dyn Transport>,
    selector: Arc<dyn Selector>,
    request_timeout: Duration,
    retries: usize,
    backoff: fn(u32) -> Duration,
    max_message_size: usize,
    layers: Vec<LayerFn>,
    broker: Option<Arc<dyn crate::broker::Broker>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("selector", &self.selector)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Chooses nodes with `selector` (default [`Random`]).
    #[must_use]
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// The default timeout of a call, retries included (default 30 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The default number of retries (default 5).
    #[must_use]
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// The delay before retry `n` (1-based; default [`default_backoff`]).
    #[must_use]
    pub fn backoff(mut self, backoff: fn(u32) -> Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The largest message sent or accepted (default 4 MiB).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Wraps every request in a tower layer (the last added runs first).
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpClient> + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner).map_err(|e| LayerError(e.into())))
        }));
        self
    }

    /// Publishes events through `broker` (default: a registry broker over the client's
    /// registry and transport).
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn crate::broker::Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The client.
    pub fn build(self) -> Client {
        let broker = std::sync::OnceLock::new();
        if let Some(given) = self.broker {
            let _ = broker.set(given);
        }
        Client {
            inner: Arc::new(Inner {
                cache: CachedRegistry::new(Arc::clone(&self.registry)),
                registry: self.registry,
                transport: self.transport,
                selector: self.selector,
                request_timeout: self.request_timeout,
                retries: self.retries,
                backoff: self.backoff,
                max_message_size: self.max_message_size,
                layers: self.layers,
                pool: std::sync::RwLock::new(HashMap::new()),
                refused: Mutex::new(HashMap::new()),
                any_refused: std::sync::atomic::AtomicBool::new(false),
                pruning: std::sync::atomic::AtomicBool::new(false),
                broker,
            }),
        }
    }
}

/// Calls services by name. Cheap to clone; clones share the connection pool.
///
/// Generated clients wrap one: `VesselService::new("go.micro.srv.vessel", service.client())`.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    cache: CachedRegistry,
    transport: Arc<dyn Transport>,
    selector: Arc<dyn Selector>,
    request_timeout: Duration,
    retries: usize,
    backoff: fn(u32) -> Duration,
    max_message_size: usize,
    layers: Vec<LayerFn>,
    /// address -> the connection to it. Read on every call, written once per node.
    pool: std::sync::RwLock<HashMap<String, Connection>>,
    refused: Mutex<HashMap<String, Instant>>,
    /// Whether `refused` may hold anything (read on every call, without the lock).
    any_refused: std::sync::atomic::AtomicBool,
    pruning: std::sync::atomic::AtomicBool,
    broker: std::sync::OnceLock<Arc<dyn crate::broker::Broker>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("registry", &self.registry.name())
            .field("transport", &self.transport.name())
            .field("selector", &self.selector)
            .field("connections", &read(&self.pool).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// A client with the defaults that finds services in `registry` and reaches them
    /// over `transport`.
    pub fn new(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> Self {
        Self::builder(registry, transport).build()
    }

    /// A builder for options.
    pub fn builder(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> ClientBuilder {
        ClientBuilder {
            registry,
            transport,
            selector: Arc::new(Random),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: default_backoff,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            layers: Vec::new(),
            broker: None,
        }
    }

    /// The broker events are published through.
    pub fn broker(&self) -> Arc<dyn crate::broker::Broker> {
        Arc::clone(self.inner.broker.get_or_init(|| {
            Arc::new(crate::broker::RegistryBroker::new(
                Arc::clone(&self.inner.registry),
                Arc::clone(&self.inner.transport),
            ))
        }))
    }

    /// The registry calls are resolved through.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// Open connections, one per node called.
    pub fn connections(&self) -> usize {
        read(&self.inner.pool).len()
    }

    /// Calls a unary method of the service registered as `service`, with protobuf or,
    /// when the options say so, JSON. `path` is the gRPC path, `/package.Service/Method`.
    /// Generated clients call this.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Default
            + Clone
            + Send
            + Sync
            + 'static,
        Resp: prost::Message
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Default
            + Send
            + Sync
            + 'static,
    {
        match options.content_type {
            ContentType::Proto => {
                self.run::<ProtoCodec, _, _>(service, path, request, options)
                    .await
            }
            ContentType::Json => {
                self.run::<JsonCodec, _, _>(service, path, request, options)
                    .await
            }
        }
    }

    /// Like [`Client::call`], for messages without serde: protobuf only.
    pub async fn call_proto<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Default + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        if options.content_type == ContentType::Json {
            return Err(Error::bad_request(
                "go.micro.client",
                "JSON needs messages with serde derives (micro_codegen::Builder::serde(true))",
            ));
        }
        self.run::<ProtoCodec, _, _>(service, path, request, options)
            .await
    }

    /// Calls a server-streaming method: one request, a stream of responses.
    ///
    /// Streams are not retried (a connection failure is reported at once), and have
    /// no deadline unless the options give one (a timeout or the caller's deadline),
    /// since a stream may rightly outlive any default.
    pub async fn server_streaming<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
    {
        match options.content_type {
            ContentType::Proto => {
                self.stream::<ProtoCodec, _, _, futures::stream::Empty<Req>>(
                    service,
                    path,
                    Stream1::One(request),
                    options,
                )
                .await
            }
            ContentType::Json => {
                self.stream::<JsonCodec, _, _, futures::stream::Empty<Req>>(
                    service,
                    path,
                    Stream1::One(request),
                    options,
                )
                .await
            }
        }
    }

    /// Calls a client-streaming method: the requests of `requests`, one response.
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        requests: S,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        let receiver = match options.content_type {
            ContentType::Proto => {
                self.stream::<ProtoCodec, _, _, _>(service, path, Stream1::Many(requests), options)
                    .await
            }
            ContentType::Json => {
                self.stream::<JsonCodec, _, _, _>(service, path, Stream1::Many(requests), options)
                    .await
            }
        };
        single(receiver?).await
    }

    /// Calls a bidirectional streaming method: the requests of `requests` go out while
    /// responses come in.
    pub async fn streaming<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        requests: S,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: Json + prost::Message + Default,
        Resp: Json + prost::Message + Default,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        match options.content_type {
            ContentType::Proto => {
                self.stream::<ProtoCodec, _, _, _>(service, path, Stream1::Many(requests), options)
                    .await
            }
            ContentType::Json => {
                self.stream::<JsonCodec, _, _, _>(service, path, Stream1::Many(requests), options)
                    .await
            }
        }
    }

    /// [`Client::server_streaming`] for messages without serde: protobuf only.
    pub async fn server_streaming_proto<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        proto_only(&options)?;
        self.stream::<ProtoCodec, _, _, futures::stream::Empty<Req>>(
            service,
            path,
            Stream1::One(request),
            options,
        )
        .await
    }

    /// [`Client::client_streaming`] for messages without serde: protobuf only.
    pub async fn client_streaming_proto<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        requests: S,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        proto_only(&options)?;
        let receiver = self
            .stream::<ProtoCodec, _, _, _>(service, path, Stream1::Many(requests), options)
            .await?;
        single(receiver).await
    }

    /// [`Client::streaming`] for messages without serde: protobuf only.
    pub async fn streaming_proto<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        requests: S,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        proto_only(&options)?;
        self.stream::<ProtoCodec, _, _, _>(service, path, Stream1::Many(requests), options)
            .await
    }

    /// Opens a stream to one node: requests out, a receiver of responses back.
    async fn stream<C, Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        requests: Stream1<Req, S>,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        let deadline = match (options.timeout, options.deadline) {
            (Some(t), Some(d)) => Some((Instant::now() + t).min(d)),
            (Some(t), None) => Some(Instant::now() + t),
            (None, d) => d,
        };
        self.ensure_pruning().await;
        let node = self.pick(service, &[], &options).await?;
        let connection = self.connection(&node.address).map_err(client_error)?;
        let mut grpc = tonic::client::Grpc::new(connection)
            .max_decoding_message_size(self.inner.max_message_size)
            .max_encoding_message_size(self.inner.max_message_size);
        let failed = |status: tonic::Status| {
            if is_connection_failure(&status) {
                self.forget(&node.address);
                self.refused(&node.address);
                Error::service_unavailable(
                    "go.micro.client",
                    format!(
                        "service {service}: node {} at {} unreachable: {}",
                        node.id,
                        node.address,
                        status.message()
                    ),
                )
            } else {
                client_error(status)
            }
        };
        grpc.ready().await.map_err(|e| {
            failed(tonic::Status::unavailable(format!(
                "connection not ready: {e}"
            )))
        })?;
        let codec = C::default();
        let subtype = Codec::<Req>::name(&codec);
        let codec: TonicCodec<C, Req, Resp> = TonicCodec::new(codec);
        let path = http::uri::PathAndQuery::from_static(path);
        let prepare = |request: &mut tonic::metadata::MetadataMap,
                       extensions: &mut http::Extensions| {
            for (key, value) in options.metadata.iter() {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                    tonic::metadata::MetadataValue::try_from(value),
                ) {
                    request.insert(k, v);
                }
            }
            if subtype != "proto" {
                extensions.insert(ContentSubtype(subtype));
            }
        };
        let opened = match requests {
            Stream1::One(one) => {
                let mut request = tonic::Request::new(one);
                let mut ext = std::mem::take(request.extensions_mut());
                prepare(request.metadata_mut(), &mut ext);
                *request.extensions_mut() = ext;
                if let Some(at) = deadline {
                    request.set_timeout(at.saturating_duration_since(Instant::now()));
                }
                let call = grpc.server_streaming(request, path, codec);
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, call).await.map_err(|_| {
                        Error::timeout("go.micro.client", format!("stream to {service} timed out"))
                    })?,
                    None => call.await,
                }
            }
            Stream1::Many(stream) => {
                let mut request = tonic::Request::new(stream);
                let mut ext = std::mem::take(request.extensions_mut());
                prepare(request.metadata_mut(), &mut ext);
                *request.extensions_mut() = ext;
                if let Some(at) = deadline {
                    request.set_timeout(at.saturating_duration_since(Instant::now()));
                }
                let call = grpc.streaming(request, path, codec);
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, call).await.map_err(|_| {
                        Error::timeout("go.micro.client", format!("stream to {service} timed out"))
                    })?,
                    None => call.await,
                }
            }
        };
        let streaming = opened.map_err(failed)?.into_inner();
        use futures::StreamExt;
        Ok(Receiver::new(
            streaming.map(|item| item.map_err(client_error)),
            deadline,
        ))
    }

    async fn run<C, Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        // Shared by every attempt: a retry re-encodes it, never copies it.
        let request = Arc::new(request);
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        let started = Instant::now();
        let mut deadline = started + timeout;
        if let Some(caller) = options.deadline {
            deadline = deadline.min(caller);
        }
        let retries = options.retries.unwrap_or(self.inner.retries);
        let timed_out = || {
            Error::timeout(
                "go.micro.client",
                format!("call to {service} {path} timed out after {timeout:?}"),
            )
        };
        self.ensure_pruning().await;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = None;
        for n in 0..=retries {
            if n > 0 {
                let delay = (self.inner.backoff)(u32::try_from(n).unwrap_or(u32::MAX));
                if Instant::now() + delay >= deadline {
                    break;
                }
                tokio::time::sleep(delay).await;
            }
            // The time left as the request leaves: the first attempt leaves at once
            // (grpc-timeout counts whole milliseconds), a retry after its backoff.
            let now = if n == 0 { started } else { Instant::now() };
            // From memory when cached (no timer, no await); else ask the registry.
            let services = match self.inner.cache.cached(service).filter(|s| !s.is_empty()) {
                Some(services) => services,
                None => {
                    match tokio::time::timeout_at(deadline, self.inner.cache.lookup(service)).await
                    {
                        Ok(Ok(services)) => services,
                        Ok(Err(e)) => return Err(last_error.unwrap_or_else(|| Error::from(e))),
                        Err(_) => return Err(timed_out()),
                    }
                }
            };
            // The node is borrowed from the cached list: nothing is copied per call.
            let node = match self.choose(service, &services, &tried, &options) {
                Ok(node) => node,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            let outcome = tokio::time::timeout_at(
                deadline,
                self.attempt::<C, Req, Resp>(
                    &node.address,
                    path,
                    Arc::clone(&request),
                    &options,
                    deadline.saturating_duration_since(now),
                ),
            )
            .await;
            let status = match outcome {
                Err(_) => return Err(timed_out()),
                Ok(Ok(response)) => return Ok(response),
                // tonic enforces `grpc-timeout` too, and reports it as CANCELLED; past
                // the deadline, whoever noticed first, it is a timeout.
                Ok(Err(_)) if Instant::now() >= deadline => return Err(timed_out()),
                Ok(Err(status)) => status,
            };
            let refused = is_connection_failure(&status);
            // A node that answered UNAVAILABLE is worth retrying elsewhere, not again.
            let elsewhere = status.code() == tonic::Code::Unavailable
                && self.has_untried(service, &tried, node).await;
            if !refused && !elsewhere {
                return Err(client_error(status));
            }
            tracing::debug!(service, node = %node.id, error = %status.message(), attempt = n, "retryable failure");
            if refused {
                self.forget(&node.address);
                self.refused(&node.address);
            }
            last_error = Some(Error::service_unavailable(
                "go.micro.client",
                format!(
                    "service {service}: node {} at {} unavailable: {}",
                    node.id,
                    node.address,
                    status.message()
                ),
            ));
            tried.push(node.address.clone());
        }
        Err(last_error.unwrap_or_else(timed_out))
    }

    /// One attempt on one node with codec `C`.
    async fn attempt<C, Req, Resp>(
        &self,
        address: &str,
        path: &'static str,
        request: Arc<Req>,
        options: &CallOptions,
        time_left: Duration,
    ) -> Result<Resp, tonic::Status>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        let connection = self.connection(address)?;
        let mut request = tonic::Request::new(request);
        for (key, value) in options.metadata.iter() {
            match (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value),
            ) {
                (Ok(k), Ok(v)) => {
                    request.metadata_mut().insert(k, v);
                }
                _ => tracing::debug!(key, "skipping metadata that is not a valid header"),
            }
        }
        let codec = C::default();
        let subtype = Codec::<Req>::name(&codec);
        // Protobuf is tonic's own content-type; only other codecs need naming (and the
        // extension map is not allocated for the common case).
        if subtype != "proto" {
            request.extensions_mut().insert(ContentSubtype(subtype));
        }
        let codec: SharedRequestCodec<C, Req, Resp> =
            SharedRequestCodec(codec, std::marker::PhantomData);
        let mut grpc = tonic::client::Grpc::new(connection)
            .max_decoding_message_size(self.inner.max_message_size)
            .max_encoding_message_size(self.inner.max_message_size);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        request
            .metadata_mut()
            .insert("grpc-timeout", grpc_timeout(time_left));
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Whether a node other than `node` and those in `tried` is known for `service`.
    async fn has_untried(&self, service: &str, tried: &[String], node: &Node) -> bool {
        self.inner
            .cache
            .lookup(service)
            .await
            .is_ok_and(|services| {
                services
                    .iter()
                    .flat_map(|s| s.nodes.iter())
                    .any(|n| n.address != node.address && !tried.contains(&n.address))
            })
    }

    /// Chooses a node: from the cached registry, preferring nodes not yet tried in
    /// this call and not lately refusing connections. Clones only the chosen node.
    async fn pick(
        &self,
        service: &str,
        tried: &[String],
        options: &CallOptions,
    ) -> Result<Node, Error> {
        let services = self.inner.cache.lookup(service).await?;
        self.choose(service, &services, tried, options).cloned()
    }

    /// [`Client::pick`] among `services`, with no I/O and no copy.
    fn choose<'a>(
        &self,
        service: &str,
        services: &'a [micro_registry::Service],
        tried: &[String],
        options: &CallOptions,
    ) -> Result<&'a Node, Error> {
        let all: Vec<&Node> = services.iter().flat_map(|s| s.nodes.iter()).collect();
        if all.is_empty() {
            return Err(Error::internal_server_error(
                "go.micro.client",
                format!("service {service}: no nodes"),
            ));
        }
        let any_refused = self
            .inner
            .any_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let candidates: Vec<&Node> = if tried.is_empty() && !any_refused {
            all
        } else {
            let mut refused = lock(&self.inner.refused);
            if tried.is_empty() && refused.is_empty() {
                all
            } else {
                refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
                if refused.is_empty() {
                    self.inner
                        .any_refused
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                let fresh: Vec<&Node> = all
                    .iter()
                    .copied()
                    .filter(|n| !tried.contains(&n.address) && !refused.contains_key(&n.address))
                    .collect();
                if !fresh.is_empty() {
                    fresh
                } else {
                    let untried: Vec<&Node> = all
                        .iter()
                        .copied()
                        .filter(|n| !tried.contains(&n.address))
                        .collect();
                    if untried.is_empty() { all } else { untried }
                }
            }
        };
        let selector = options.selector.as_ref().unwrap_or(&self.inner.selector);
        let index = if candidates.len() == 1 && options.selector.is_none() {
            0
        } else {
            selector.select(service, &candidates)
        };
        candidates
            .get(index)
            .or_else(|| candidates.first())
            .copied()
            .ok_or_else(|| {
                Error::internal_server_error(
                    "go.micro.client",
                    format!("service {service}: no nodes"),
                )
            })
    }

    /// The pooled connection to `address` (layered, when the client has layers),
    /// created on first use.
    fn connection(&self, address: &str) -> Result<Connection, tonic::Status> {
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

    /// Remembers that `address` refused a connection.
    fn refused(&self, address: &str) {
        lock(&self.inner.refused).insert(address.to_string(), Instant::now());
        self.inner
            .any_refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn forget(&self, address: &str) {
        write(&self.inner.pool).remove(address);
    }

    /// Closes connections to nodes that leave the registry (once per client).
    async fn ensure_pruning(&self) {
        use std::sync::atomic::Ordering;
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
                    }
                    Ok(_) | Err(micro_registry::Error::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// The request side of a stream: one message, or a stream of them.
enum Stream1<Req, S> {
    One(Req),
    Many(S),
}

/// The one response of a client-streaming call.
async fn single<Resp>(mut receiver: Receiver<Resp>) -> Result<Resp, Error> {
    match receiver.recv().await {
        Some(result) => result,
        None => Err(Error::internal_server_error(
            "go.micro.client",
            "the stream ended without a response",
        )),
    }
}

fn proto_only(options: &CallOptions) -> Result<(), Error> {
    if options.content_type == ContentType::Json {
        return Err(Error::bad_request(
            "go.micro.client",
            "JSON needs messages with serde derives (micro_codegen::Builder::serde(true))",
        ));
    }
    Ok(())
}

/// `grpc-timeout` for the time left, in whole milliseconds (rounded down, so the
/// server never outlives the caller). Within one millisecond calls carry the same
/// value: HPACK sends it as one indexed byte, and each thread formats it once.
fn grpc_timeout(left: Duration) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    use std::cell::RefCell;
    type Value = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;
    thread_local! {
        static LAST: RefCell<Option<(u128, Value)>> = const { RefCell::new(None) };
    }
    let millis = left.as_millis();
    if millis == 0 {
        return format_timeout(left);
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == millis => value.clone(),
            _ => {
                let value = format_timeout(left);
                *last = Some((millis, value.clone()));
                value
            }
        }
    })
}

fn format_timeout(left: Duration) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    let millis = left.as_millis();
    let text = if millis == 0 {
        format!("{}u", left.as_micros())
    } else if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        // Eight digits at most: past about 27 hours, hours.
        format!("{}H", (left.as_secs() / 3600).min(99_999_999))
    };
    tonic::metadata::MetadataValue::try_from(text.as_str())
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("1u"))
}

/// An error from a client layer or the connection. A concrete type rather than a
/// boxed trait object, which here trips a compiler limitation (rust-lang/rust#102211).
#[derive(Debug)]
pub struct LayerError(pub BoxError);

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// tonic's codec for a call whose request is shared between attempts: encodes
/// `Arc<Req>` by reference with the micro codec `C`, decodes `Resp` with it.
struct SharedRequestCodec<C, Req, Resp>(C, std::marker::PhantomData<fn(Req) -> Resp>);

/// The encoding half of [`SharedRequestCodec`].
struct SharedEncoder<C, Req>(C, std::marker::PhantomData<fn(Req)>);

impl<C, Req> tonic::codec::Encoder for SharedEncoder<C, Req>
where
    C: Codec<Req>,
    Req: Send + Sync + 'static,
{
    type Item = Arc<Req>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Arc<Req>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        self.0.encode(&*item, dst).map_err(tonic::Status::from)
    }
}

impl<C, Req, Resp> tonic::codec::Codec for SharedRequestCodec<C, Req, Resp>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + Sync + 'static,
    Resp: Send + 'static,
{
    type Encode = Arc<Req>;
    type Decode = Resp;
    type Encoder = SharedEncoder<C, Req>;
    type Decoder = micro_transport::CodecDecoder<C, Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(self.0.clone(), std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut TonicCodec::<C, Resp, Resp>::new(self.0.clone()))
    }
}

/// One node's connection: the channel itself when the client has no layers (nothing
/// boxed per call), else the layers around it.
#[derive(Clone)]
enum Connection {
    Plain(SetContentType<tonic::transport::Channel>),
    Layered(HttpClient),
}

type PlainFuture = futures::future::MapErr<
    <tonic::transport::Channel as Service<http::Request<Body>>>::Future,
    fn(tonic::transport::Error) -> LayerError,
>;

impl Service<http::Request<Body>> for Connection {
    type Response = http::Response<Body>;
    type Error = LayerError;
    type Future =
        futures::future::Either<PlainFuture, <HttpClient as Service<http::Request<Body>>>::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), LayerError>> {
        match self {
            Connection::Plain(channel) => {
                channel.poll_ready(cx).map_err(|e| LayerError(Box::new(e)))
            }
            Connection::Layered(stack) => stack.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        use futures::TryFutureExt;
        match self {
            Connection::Plain(channel) => {
                futures::future::Either::Left(channel.call(request).map_err(
                    (|e| LayerError(Box::new(e))) as fn(tonic::transport::Error) -> LayerError,
                ))
            }
            Connection::Layered(stack) => futures::future::Either::Right(stack.call(request)),
        }
    }
}

/// The gRPC content subtype of a request (`proto`, `json`), for [`SetContentType`].
#[derive(Clone, Copy, Debug)]
struct ContentSubtype(&'static str);

/// tonic always sends `content-type: application/grpc`; this names the codec
/// actually used, as gRPC (and go-micro's server) expect.
#[derive(Clone)]
struct SetContentType<S>(S);

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

/// A status from an attempt as the caller sees it.
fn client_error(status: tonic::Status) -> Error {
    // tonic reports a message over the size limit as OUT_OF_RANGE; gRPC says
    // RESOURCE_EXHAUSTED.
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        return Error::new("go.micro.client", status.message(), 429);
    }
    Error::from(status)
}

/// Whether the call never reached a handler: the connection could not be made.
fn is_connection_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown {
        return false;
    }
    // tonic reports connect errors with the transport's error as a source.
    let mut source = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<micro_transport::TransportError>()
            .is_some()
            || e.downcast_ref::<tonic::transport::Error>().is_some()
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_counts_whole_milliseconds() {
        let text = |d: Duration| grpc_timeout(d).to_str().unwrap_or_default().to_string();
        assert_eq!(text(Duration::from_micros(29_999_871)), "29999m");
        assert_eq!(text(Duration::from_micros(29_999_001)), "29999m");
        assert_eq!(text(Duration::from_micros(250)), "250u");
        assert_eq!(text(Duration::ZERO), "0u");
        assert_eq!(text(Duration::from_secs(200_000)), "55H");
        assert_eq!(text(Duration::from_millis(99_999_999)), "99999999m");
    }

    #[test]
    fn backoff_is_go_micros() {
        let ms: Vec<u128> = (1..=5).map(|n| default_backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 600, 1900, 4300, 7900]);
    }
}
