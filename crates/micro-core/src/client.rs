//! The client: calls services by name.
//!
//! A call resolves the service name through the registry, picks a node at random,
//! and sends the request over a pooled HTTP/2 connection to that node (one per node,
//! reused across calls). A node that refuses the connection is skipped and another one
//! is tried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use micro_registry::{CachedRegistry, Node, Registry};
use micro_transport::{ProtoCodec, TonicCodec, Transport};
use rand::Rng;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::server::DEFAULT_MAX_MESSAGE_SIZE;
use crate::{CallOptions, Error};

/// How long a call may take by default, retries included (go-micro v4's value).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many other nodes are tried after a node refuses the connection.
pub const DEFAULT_RETRIES: usize = 1;
/// How long a node that refused a connection is passed over (unless no other is left).
/// Long enough to outlast an mDNS goodbye (at most 1.5 s) and a restart.
const REFUSED_FOR: Duration = Duration::from_secs(5);

/// Calls services by name. Cheap to clone; clones share the connection pool.
///
/// Generated clients wrap one: `VesselService::new("go.micro.srv.vessel", service.client())`.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn Registry>,
    cache: CachedRegistry,
    refused: Mutex<HashMap<String, Instant>>,
    transport: Arc<dyn Transport>,
    request_timeout: Duration,
    retries: usize,
    max_message_size: usize,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Client {
    /// A client that finds services in `registry` and reaches them over `transport`.
    pub fn new(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: CachedRegistry::new(Arc::clone(&registry)),
                refused: Mutex::new(HashMap::new()),
                registry,
                transport,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                retries: DEFAULT_RETRIES,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The registry calls are resolved through.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// Calls a unary method of the service registered as `service`.
    ///
    /// `path` is the gRPC path, `/package.Service/Method`. Generated clients call this.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Default + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        let mut deadline = Instant::now() + timeout;
        if let Some(caller) = options.deadline {
            deadline = deadline.min(caller);
        }
        let attempt = async {
            let services = self.inner.cache.lookup(service).await?;
            let mut nodes = self.usable_nodes(&services);
            if nodes.is_empty() {
                return Err(Error::internal_server_error(
                    "go.micro.client",
                    format!("service {service}: no nodes"),
                ));
            }
            let mut last_error = None;
            for _ in 0..=self.inner.retries {
                if nodes.is_empty() {
                    break;
                }
                let pick = rand::rng().random_range(0..nodes.len());
                let node = nodes.swap_remove(pick);
                match self
                    .call_node(&node, path, request.clone(), &options, deadline)
                    .await
                {
                    Err(status) if is_connection_failure(&status) => {
                        tracing::debug!(service, node = %node.id, error = %status.message(), "node unreachable; trying another");
                        self.forget(&node.address);
                        self.inner
                            .refused
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(node.address.clone(), Instant::now());
                        last_error = Some(Error::service_unavailable(
                            "go.micro.client",
                            format!(
                                "service {service}: node {} at {} unreachable: {}",
                                node.id,
                                node.address,
                                status.message()
                            ),
                        ));
                    }
                    Err(status) => return Err(Error::from(status)),
                    Ok(response) => return Ok(response),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                Error::internal_server_error(
                    "go.micro.client",
                    format!("service {service}: no nodes"),
                )
            }))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(
                "go.micro.client",
                format!("call to {service} {path} timed out after {timeout:?}"),
            )),
        }
    }

    async fn call_node<Req, Resp>(
        &self,
        node: &Node,
        path: &'static str,
        request: Req,
        options: &CallOptions,
        deadline: Instant,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let channel = self.channel(&node.address)?;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(self.inner.max_message_size)
            .max_encoding_message_size(self.inner.max_message_size);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
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
        let codec: TonicCodec<ProtoCodec, Req, Resp> = TonicCodec::new(ProtoCodec);
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every node of every version, less those that refused a connection lately
    /// (unless that leaves none).
    fn usable_nodes(&self, services: &[micro_registry::Service]) -> Vec<Node> {
        let all: Vec<Node> = services
            .iter()
            .flat_map(|s| s.nodes.iter().cloned())
            .collect();
        let mut refused = self.inner.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.is_empty() {
            return all;
        }
        refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
        let usable: Vec<Node> = all
            .iter()
            .filter(|n| !refused.contains_key(&n.address))
            .cloned()
            .collect();
        if usable.is_empty() { all } else { usable }
    }

    /// The pooled connection to `address`, created on first use.
    fn channel(&self, address: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
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
        let channel = endpoint.connect_with_connector_lazy(connector);
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn forget(&self, address: &str) {
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
    }
}

/// Whether the call never reached a handler: the connection could not be made.
fn is_connection_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    // tonic reports connect errors as UNAVAILABLE with a transport error as source.
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
    status.message().contains("connection")
}
