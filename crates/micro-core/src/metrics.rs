//! Prometheus metrics (feature `metrics`): one registry per process, shared by every
//! [`Service`](crate::Service), [`Client`](crate::Client) and broker in it, and the
//! HTTP endpoint that serves it.
//!
//! With the feature on, metrics are always recorded (into memory); they are only
//! served when asked for. A service serves `GET /metrics` (Prometheus text format 0.0.4) over HTTP/1.1 when
//! `MICRO_METRICS_ADDRESS=host:port` is set or [`Service::metrics_address`](crate::Service::metrics_address) was
//! called; a program without a service calls [`serve`]. Other paths answer 404.
//!
//! Names follow the OpenTelemetry semantic conventions v1.40.0 for RPC (as the traces), mapped to
//! Prometheus (dots become `_`, the unit `s` becomes `_seconds`, counters end in
//! `_total`); what has no OpenTelemetry equivalent is named `micro_*`:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `rpc_server_call_duration_seconds` | histogram | `rpc_system_name`, `micro_service`, `rpc_method`, `rpc_status_code` |
//! | `rpc_client_call_duration_seconds` | histogram | same |
//! | `micro_server_calls_in_flight` | gauge | `micro_service` |
//! | `micro_client_calls_in_flight` | gauge | `micro_service` |
//! | `micro_client_retries_total` | counter | `micro_service`, `rpc_method` |
//! | `micro_client_nodes_ejected_total` | counter | `micro_service`, `reason` (`refused`, `failing`) |
//! | `micro_client_nodes_restored_total` | counter | `micro_service` |
//! | `micro_registry_lookups_total` | counter | `micro_service`, `result` (`hit`, `miss`) |
//! | `micro_registry_queries_total` | counter | |
//! | `micro_registry_errors_total` | counter | |
//! | `micro_registry_stale_served_total` | counter | |
//! | `micro_broker_messages_published_total` | counter | `messaging_system`, `messaging_destination_name`, `result` (`ok`, `error`) |
//! | `micro_broker_messages_delivered_total` | counter | `messaging_destination_name`, `result` (`ok`, `error`) |
//! | `micro_broker_messages_dropped_total` | counter | `messaging_system`, `reason` (`buffer_full`, `malformed`) |
//!
//! - `micro_service` is the registry name (`go.micro.srv.vessel`): the one served, or
//!   the one called. `rpc_method` is the gRPC path without its leading `/`
//!   (`go.micro.srv.vessel.VesselService/FindAvailable`); a server answering a path
//!   it has no route for counts it as `_OTHER`. `rpc_status_code` is the gRPC code's
//!   name (`OK`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...); a call its caller gave up
//!   on is `CANCELLED`.
//! - The client's duration is the whole call, retries included; for a streaming
//!   call it is the time to open the stream.
//! - The server's duration runs until the last byte of the response (its trailers).
//!   Health checks and reflection are not counted.
//! - A labelled family is listed from its first sample on (a scrape before any call
//!   shows no `rpc_*` lines); the `micro_registry_*` counters are always listed.
//! - Recording is cheap: a server makes the handles of its routes' OK series when it
//!   starts, a client those of a service and method on its first call, so a call
//!   answered OK allocates nothing and takes no family lock.
//! - The `_count` of a duration histogram is the number of calls with those labels.
//! - No label ever holds a node id or a peer address, so the number of series stays
//!   bounded by the services, methods and topics a program uses.
//! - `micro_registry_queries_total` counts the registry reads behind the client's
//!   cache, `micro_registry_errors_total` those that failed, and
//!   `micro_registry_stale_served_total` the failed ones answered from the cache.
//! - `messaging_system` is the broker's name (`registry`, `memory`, `nats`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A client-only program serves its metrics itself; they stop when `server` drops.
//! let server = micro_core::metrics::serve("127.0.0.1:9464").await?;
//! println!("metrics on http://{}/metrics", server.local_addr());
//! // Programs may add their own metrics to the same registry.
//! use micro_core::metrics::prometheus_client::metrics::counter::Counter;
//! let jobs = Counter::<u64>::default();
//! micro_core::metrics::with_registry(|registry| {
//!     registry.register("jobs", "Jobs done", jobs.clone())
//! });
//! jobs.inc();
//! assert!(micro_core::metrics::encode().contains("jobs_total 1"));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The Prometheus client micro records with, for programs that add their own metrics
/// ([`with_registry`]).
pub use prometheus_client;

/// The content type of [`encode`]'s text: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The OpenTelemetry semantic conventions version the names follow.
pub const SEMCONV_VERSION: &str = crate::telemetry::semconv::VERSION;

/// The buckets of the duration histograms, in seconds (OpenTelemetry's advice for
/// RPC durations).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The method label of a call to a path the server has no route for.
pub const OTHER_METHOD: &str = "_OTHER";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    rpc_system_name: &'static str,
    micro_service: String,
    rpc_method: String,
    rpc_status_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    micro_service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    micro_service: String,
    rpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    micro_service: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    micro_service: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishedLabels {
    messaging_system: String,
    messaging_destination_name: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveredLabels {
    messaging_destination_name: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    messaging_system: &'static str,
    reason: &'static str,
}

type Durations = Family<CallLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every family micro records, and the registry they are in.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    server_duration: Durations,
    client_duration: Durations,
    server_in_flight: Family<ServiceLabels, Gauge>,
    client_in_flight: Family<ServiceLabels, Gauge>,
    retries: Family<MethodLabels, Counter>,
    ejected: Family<ReasonLabels, Counter>,
    restored: Family<ServiceLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
    published: Family<PublishedLabels, Counter>,
    delivered: Family<DeliveredLabels, Counter>,
    dropped: Family<DroppedLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The registry's cache counters (micro-registry keeps them; read at each scrape).
#[derive(Debug)]
struct RegistryStats;

impl Collector for RegistryStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = micro_registry::cache_stats();
        for (name, help, value) in [
            (
                "micro_registry_queries",
                "Reads of the registry behind the client's cache",
                stats.queries,
            ),
            (
                "micro_registry_errors",
                "Registry reads that failed",
                stats.errors,
            ),
            (
                "micro_registry_stale_served",
                "Failed registry reads answered with the cached nodes",
                stats.stale_served,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let server_duration = Durations::new_with_constructor(duration_histogram);
        let client_duration = Durations::new_with_constructor(duration_histogram);
        let metrics = Self {
            server_duration,
            client_duration,
            server_in_flight: Family::default(),
            client_in_flight: Family::default(),
            retries: Family::default(),
            ejected: Family::default(),
            restored: Family::default(),
            lookups: Family::default(),
            published: Family::default(),
            delivered: Family::default(),
            dropped: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "rpc_server_call_duration_seconds",
            "Duration of the RPCs a server handled (OpenTelemetry rpc.server.call.duration)",
            metrics.server_duration.clone(),
        );
        registry.register(
            "rpc_client_call_duration_seconds",
            "Duration of the RPCs a client made, retries included (OpenTelemetry rpc.client.call.duration)",
            metrics.client_duration.clone(),
        );
        registry.register(
            "micro_server_calls_in_flight",
            "Calls a server is handling",
            metrics.server_in_flight.clone(),
        );
        registry.register(
            "micro_client_calls_in_flight",
            "Calls a client is making",
            metrics.client_in_flight.clone(),
        );
        registry.register(
            "micro_client_retries",
            "Attempts after the first of a call",
            metrics.retries.clone(),
        );
        registry.register(
            "micro_client_nodes_ejected",
            "Nodes taken out of the client's choice",
            metrics.ejected.clone(),
        );
        registry.register(
            "micro_client_nodes_restored",
            "Ejected nodes that answered again",
            metrics.restored.clone(),
        );
        registry.register(
            "micro_registry_lookups",
            "Client lookups of a service's nodes, from the cache (hit) or the registry (miss)",
            metrics.lookups.clone(),
        );
        registry.register(
            "micro_broker_messages_published",
            "Events published",
            metrics.published.clone(),
        );
        registry.register(
            "micro_broker_messages_delivered",
            "Events delivered to a subscriber's handler",
            metrics.delivered.clone(),
        );
        registry.register(
            "micro_broker_messages_dropped",
            "Events dropped before a handler saw them",
            metrics.dropped.clone(),
        );
        registry.register_collector(Box::new(RegistryStats));
        Self {
            registry: Mutex::new(registry),
            ..metrics
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, created on first use.
pub(crate) fn global() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets `f` register the program's own metrics in the registry micro serves.
pub fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut lock(&global().registry))
}

/// Every metric in the process, in Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
///
/// ```
/// use micro_core::metrics::prometheus_client::metrics::counter::Counter;
///
/// let hits = Counter::<u64>::default();
/// micro_core::metrics::with_registry(|r| r.register("cache_hits", "Cache hits", hits.clone()));
/// hits.inc();
/// let text = micro_core::metrics::encode();
/// assert!(text.contains("# TYPE cache_hits_total counter\ncache_hits_total 1\n"));
/// ```
pub fn encode() -> String {
    let mut text = String::new();
    let registry = lock(&global().registry);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    text
}

/// The name of a gRPC code, as `rpc_status_code` has it (`OK`, `UNAVAILABLE`): the
/// traces' name for it.
pub(crate) use crate::telemetry::semconv::code_name;

fn call_labels(service: &str, method: &str, code: tonic::Code) -> CallLabels {
    CallLabels {
        rpc_system_name: "grpc",
        micro_service: service.to_string(),
        rpc_method: method.to_string(),
        rpc_status_code: code_name(code),
    }
}

impl Metrics {
    pub(crate) fn server_call(
        &self,
        service: &str,
        method: &str,
        code: tonic::Code,
        took: Duration,
    ) {
        self.server_duration
            .get_or_create(&call_labels(service, method, code))
            .observe(took.as_secs_f64());
    }

    /// The handle of one duration series, for callers that keep it.
    pub(crate) fn duration(
        &self,
        server: bool,
        service: &str,
        method: &str,
        code: tonic::Code,
    ) -> Histogram {
        let family = if server {
            &self.server_duration
        } else {
            &self.client_duration
        };
        family
            .get_or_create(&call_labels(service, method, code))
            .clone()
    }

    /// The handle of one lookup series, for callers that keep it.
    pub(crate) fn lookup_counter(&self, service: &str, hit: bool) -> Counter {
        self.lookups
            .get_or_create(&LookupLabels {
                micro_service: service.to_string(),
                result: if hit { "hit" } else { "miss" },
            })
            .clone()
    }

    /// The in-flight gauge of a server (`server`) or client serving or calling `service`.
    pub(crate) fn in_flight(&self, server: bool, service: &str) -> Gauge {
        let family = if server {
            &self.server_in_flight
        } else {
            &self.client_in_flight
        };
        family
            .get_or_create(&ServiceLabels {
                micro_service: service.to_string(),
            })
            .clone()
    }

    pub(crate) fn retry(&self, service: &str, method: &str) {
        self.retries
            .get_or_create(&MethodLabels {
                micro_service: service.to_string(),
                rpc_method: method.to_string(),
            })
            .inc();
    }

    pub(crate) fn ejected(&self, service: &str, reason: &'static str) {
        self.ejected
            .get_or_create(&ReasonLabels {
                micro_service: service.to_string(),
                reason,
            })
            .inc();
    }

    pub(crate) fn restored(&self, service: &str) {
        self.restored
            .get_or_create(&ServiceLabels {
                micro_service: service.to_string(),
            })
            .inc();
    }

    pub(crate) fn published(&self, system: &str, topic: &str, ok: bool) {
        self.published
            .get_or_create(&PublishedLabels {
                messaging_system: system.to_string(),
                messaging_destination_name: topic.to_string(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub(crate) fn delivered(&self, topic: &str, ok: bool) {
        self.delivered
            .get_or_create(&DeliveredLabels {
                messaging_destination_name: topic.to_string(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub(crate) fn dropped(&self, system: &'static str, reason: &'static str) {
        self.dropped
            .get_or_create(&DroppedLabels {
                messaging_system: system,
                reason,
            })
            .inc();
    }
}

/// The `/metrics` endpoint, serving until it is dropped (or [`shutdown`](Self::shutdown)).
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving: the listener closes and open connections are cut.
    pub fn shutdown(self) {}
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `address` (`host:port`, `:port` for every interface)
/// over HTTP/1.1 until the returned [`MetricsServer`] is dropped. Needs a tokio
/// runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let server = micro_core::metrics::serve("127.0.0.1:0").await?;
/// let url = format!("http://{}/metrics", server.local_addr());
/// # let _ = url; Ok(()) }
/// ```
pub async fn serve(address: &str) -> std::io::Result<MetricsServer> {
    let address = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let local_addr = listener.local_addr()?;
    // Created now, so that the families exist (and are listed) from the first scrape.
    let _ = global();
    let task = tokio::spawn(accept(listener));
    tracing::info!(address = %local_addr, "serving metrics on /metrics");
    Ok(MetricsServer { local_addr, task })
}

/// The most connections `/metrics` keeps open. A scraper needs one; more are kept
/// for a few scrapers at once. Beyond it the oldest connection is cut for the new
/// one, so that idle or slow clients can neither hold every descriptor of the
/// process (which its gRPC listener shares) nor keep a scraper out.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send a request's head (and how long it may sit
/// idle between requests) before it is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept(listener: tokio::net::TcpListener) {
    // Connections end with the server: dropping the set aborts them.
    let mut connections = tokio::task::JoinSet::new();
    // Oldest first.
    let mut open = std::collections::VecDeque::with_capacity(MAX_CONNECTIONS);
    loop {
        tokio::select! {
            Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|(open_id, _): &(tokio::task::Id, tokio::task::AbortHandle)| *open_id != id);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if open.len() >= MAX_CONNECTIONS
                        && let Some((_, oldest)) = open.pop_front()
                    {
                        tracing::debug!(%peer, "metrics connections at their limit: closing the oldest");
                        oldest.abort();
                    }
                    let handle = connections.spawn(serve_connection(stream));
                    open.push_back((handle.id(), handle));
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "metrics listener failed to accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, hyper::service::service_fn(respond))
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "metrics connection ended with an error");
    }
}

async fn respond(
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<String>, std::convert::Infallible> {
    let mut response = http::Response::new(String::new());
    if request.uri().path() != "/metrics" {
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        *response.body_mut() = "not found: metrics are on /metrics\n".to_string();
        return Ok(response);
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        return Ok(response);
    }
    *response.body_mut() = encode();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(response)
}
