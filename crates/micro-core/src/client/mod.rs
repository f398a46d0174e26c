//! The client: calls services by name.
//!
//! A call resolves the service name through a cache of the registry, picks a node
//! with the [`Selector`] (random by default), and sends the
//! request over a pooled HTTP/2 connection to that node (one per node, reused; closed
//! when the node leaves the registry).
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
//! deadline, when the node could not be reached (the request never left), when the
//! node turned it away unprocessed (its HTTP/2 GOAWAY, sent as it shuts down, named
//! an earlier last stream, or its connection closed before the request was written),
//! or when it answered UNAVAILABLE, and only on a node not yet tried and not ejected.
//! After a refused connection or a request turned away the next node is tried at
//! once; after UNAVAILABLE, after
//! go-micro's backoff (0.1 s, 0.6 s, 1.9 s, ...). No other error is retried (go-micro
//! v4 retries only its own timeouts; micro does not, since a request that timed out
//! may have run). When no node is left to try, the call fails at once with 503 naming
//! the nodes: no backoff is spent on nodes known to be dead.
//!
//! # Ejection and the retry budget
//!
//! Failing nodes are taken out of the choice ([`Ejection`]): a node that refuses a
//! connection at once (and the registry is asked to check it, see
//! `Registry::suspect`), a node that answers UNAVAILABLE after 5 in a row; the penalty
//! grows from 1 s to 60 s, and a node is probed back when it ends. Retries stay within
//! a [`RetryBudget`] (20 % of calls plus 10 per second), so that retries cannot
//! multiply an overload.
//!
//! Streams go to one node, are not retried, and have no deadline unless the options
//! give one (a timeout or the caller's deadline), since a stream may rightly outlive
//! any default.
//!
//! # Getting a client
//!
//! - In a service: [`Service::client`](crate::Service::client), which shares the
//!   service's registry and transport; its options are set with
//!   [`Service::client_options`](crate::Service::client_options).
//! - Without a service (a command-line tool, a test): [`Client::from_env`] reads the
//!   same `MICRO_REGISTRY*` variables a service does; [`ClientBuilder::from_env`]
//!   with options; [`Client::builder`] with a registry and a transport of your own
//!   (TLS, say).
//!
//! # Middleware
//!
//! [`ClientBuilder::layer`] wraps every request in a tower layer, between the gRPC
//! encoding and the connection; its docs have an example (a header on every request,
//! and logging).
//!
//! # Calls known only at run time
//!
//! [`Client::call_json`] and its streaming siblings ([`Client::server_streaming_json`],
//! [`Client::client_streaming_json`], [`Client::streaming_json`]) call a path given at
//! run time with JSON bytes (`application/grpc+json`), as the `micro` command and an
//! HTTP gateway do; [`endpoint_path`] maps go-micro's `Service.Method` to a gRPC path.
//!
//! The files: `builder` (options), `call` (deadline, retries, one attempt, streams),
//! `dynamic` (JSON calls by a run-time path),
//! `select` (node choice), `eject` (node health), `budget` (retries allowed), `pool`
//! (connections), `error` (what a failure means).

mod budget;
mod builder;
mod call;
mod dynamic;
mod eject;
mod error;
mod pool;
mod select;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use http::uri::PathAndQuery;
use micro_registry::{CachedRegistry, Registry};
use micro_transport::{ProtoCodec, Transport};
use tower::util::BoxCloneSyncService;

pub use self::budget::RetryBudget;
pub use self::builder::{ClientBuilder, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRIES, default_backoff};
use self::call::{Requests, single};
pub use self::dynamic::{MAX_METRIC_PATHS, endpoint_path};
pub use self::eject::Ejection;
pub use self::error::LayerError;
use self::error::no_json_form;
use crate::codec::{Message, MessageJsonCodec};
use crate::selector::Selector;
use crate::stream::Receiver;
use crate::{Config, ContentType, Error, IntoRequest, IntoStreamingRequest, Request, ServiceError};

type Body = tonic::body::Body;

/// The HTTP service a client layer wraps: one node's connection.
pub type HttpClient = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, LayerError>;

type LayerFn = Arc<dyn Fn(HttpClient) -> HttpClient + Send + Sync>;

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
    pool: RwLock<foldhash::HashMap<String, pool::Connection>>,
    /// Nodes that lately failed, and their ejection.
    health: Mutex<eject::Ejected>,
    /// Whether `health` may hold anything (read on every call, without the lock).
    any_health: AtomicBool,
    ejection: eject::Ejection,
    budget: budget::Spend,
    pruning: AtomicBool,
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

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Dispatches to a call with the codec the options name: protobuf, or JSON when both
/// messages have a JSON form (else a 400 before anything is sent).
macro_rules! with_codec {
    ($options:expr, $req:ty, $resp:ty, |$codec:ident| $call:expr) => {
        match $options.content_type {
            ContentType::Proto => {
                type $codec = ProtoCodec;
                $call
            }
            ContentType::Json => {
                if !(<$req as Message>::HAS_JSON && <$resp as Message>::HAS_JSON) {
                    return Err(no_json_form());
                }
                type $codec = MessageJsonCodec;
                $call
            }
        }
    };
}

impl Client {
    /// A client with the defaults that finds services in `registry` and reaches them
    /// over `transport`.
    pub fn new(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> Self {
        Self::builder(registry, transport).build()
    }

    /// A builder for options.
    pub fn builder(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> ClientBuilder {
        ClientBuilder::new(registry, transport)
    }

    /// A client configured from the environment as a [`Service`](crate::Service) is
    /// (`MICRO_REGISTRY`, `MICRO_REGISTRY_ADDRESS`, `MICRO_MDNS_INTERFACES`; see
    /// [`Config::from_env`]), with the default options, over TCP: what a command-line
    /// tool needs, without a service of its own.
    ///
    /// Fails with [`ServiceError::Config`] naming a variable that is not usable, or
    /// [`ServiceError::Registry`] when the registry cannot be built. For options, see
    /// [`ClientBuilder::from_env`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use micro_core::Client;
    ///
    /// // MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=10.0.0.1:2379 consignment-cli
    /// let client = Client::from_env()?;
    /// // let vessels = VesselService::new("go.micro.srv.vessel", client);   (generated code)
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ServiceError> {
        Ok(ClientBuilder::from_env()?.build())
    }

    /// A client whose registry is the one `config` names, with the default options,
    /// over TCP (the environment is not read). Only `config.registry` is used.
    ///
    /// ```
    /// use micro_core::registry::RegistryKind;
    /// use micro_core::{Client, Config};
    ///
    /// let mut config = Config::default(); // or Config::from_env()?, changed
    /// config.registry.kind = RegistryKind::Memory;
    /// let client = Client::from_config(&config)?;
    /// assert_eq!(client.registry().name(), "memory");
    /// # Ok::<(), micro_core::ServiceError>(())
    /// ```
    pub fn from_config(config: &Config) -> Result<Self, ServiceError> {
        Ok(ClientBuilder::from_config(config)?.build())
    }

    fn from_builder(builder: ClientBuilder) -> Self {
        Client {
            inner: Arc::new(Inner {
                cache: CachedRegistry::new(Arc::clone(&builder.registry)),
                registry: builder.registry,
                transport: builder.transport,
                selector: builder.selector,
                request_timeout: builder.request_timeout,
                retries: builder.retries,
                backoff: builder.backoff,
                max_message_size: builder.max_message_size,
                layers: builder.layers,
                pool: RwLock::new(foldhash::HashMap::default()),
                health: Mutex::new(eject::Ejected::default()),
                any_health: AtomicBool::new(false),
                ejection: builder.ejection,
                budget: builder.retry_budget.build(),
                pruning: AtomicBool::new(false),
            }),
        }
    }

    /// The registry calls are resolved through.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The transport connections are made with.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// Open connections, one per node called.
    pub fn connections(&self) -> usize {
        read(&self.inner.pool).len()
    }

    /// Calls a unary method of the service registered as `service`. `path` is the gRPC
    /// path, `/package.Service/Method`; `request` a message, or a [`Request`] with
    /// options (protobuf by default, JSON on request). Generated clients call this.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: impl IntoRequest<Req>,
    ) -> Result<Resp, Error>
    where
        Req: Message,
        Resp: Message,
    {
        let Request { message, options } = request.into_request();
        let observed = crate::observe::client_call(service, path);
        let result = with_codec!(options, Req, Resp, |C| {
            self.unary::<C, _, _>(service, &PathAndQuery::from_static(path), message, options)
                .await
        });
        observed.finish(result.as_ref().err());
        result
    }

    /// Calls a server-streaming method: one request, a stream of responses.
    pub async fn server_streaming<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: impl IntoRequest<Req>,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: Message,
        Resp: Message,
    {
        let Request { message, options } = request.into_request();
        let requests = Requests::<_, futures_util::stream::Empty<Req>>::One(message);
        let observed = crate::observe::client_call(service, path);
        let result = with_codec!(options, Req, Resp, |C| {
            self.stream::<C, _, _, _>(service, &PathAndQuery::from_static(path), requests, options)
                .await
        });
        observed.stream(result)
    }

    /// Calls a client-streaming method: the requests of a stream, one response.
    pub async fn client_streaming<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        requests: impl IntoStreamingRequest<Message = Req>,
    ) -> Result<Resp, Error>
    where
        Req: Message,
        Resp: Message,
    {
        let Request { message, options } = requests.into_streaming_request();
        let observed = crate::observe::client_call(service, path);
        let receiver = with_codec!(options, Req, Resp, |C| {
            self.stream::<C, _, _, _>(
                service,
                &PathAndQuery::from_static(path),
                Requests::Many(message),
                options,
            )
            .await
        });
        single(observed.stream(receiver)?).await
    }

    /// Calls a bidirectional streaming method: the requests of a stream go out while
    /// responses come in.
    pub async fn streaming<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        requests: impl IntoStreamingRequest<Message = Req>,
    ) -> Result<Receiver<Resp>, Error>
    where
        Req: Message,
        Resp: Message,
    {
        let Request { message, options } = requests.into_streaming_request();
        let observed = crate::observe::client_call(service, path);
        let result = with_codec!(options, Req, Resp, |C| {
            self.stream::<C, _, _, _>(
                service,
                &PathAndQuery::from_static(path),
                Requests::Many(message),
                options,
            )
            .await
        });
        observed.stream(result)
    }
}
