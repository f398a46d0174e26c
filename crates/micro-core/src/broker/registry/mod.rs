//! The default cross-process broker: no server to run, as go-micro's HTTP broker.
//!
//! Each subscription registers a node of the service [`BROKER_SERVICE`] in the
//! registry: version = its queue group (or [`BROADCAST`]), metadata `topic` = its
//! topic, address = this process's broker endpoint. Publishing looks those nodes up
//! and delivers to every broadcast subscriber of the topic and to one member of each
//! queue group, over micro's own transport (gRPC `/micro.broker.Broker/Publish`).
//!
//! # Registrations
//!
//! A subscription's node lives as long as the service's own node: it is registered
//! with a TTL ([`RegistryBroker::ttl`]; services use their register TTL,
//! `MICRO_REGISTER_TTL`) and registered again every interval
//! ([`RegistryBroker::interval`]; `MICRO_REGISTER_INTERVAL`). Dropping or
//! unsubscribing a [`Subscriber`] deregisters its node, and [`Broker::disconnect`]
//! deregisters every node left and waits for those deregistrations; a process that
//! dies without either is forgotten when the TTL runs out.
//!
//! # Publishing
//!
//! Subscribers are looked up in a [`CachedRegistry`]: kept current by the registry's
//! watch, re-read every ten minutes as a safety net, and serving the last nodes it
//! knew when the registry fails, so a registry outage (etcd down) costs a publish
//! nothing while the subscribers are known. A lookup that does go to the registry
//! waits no longer than the publish's deadline.
//!
//! Each delivery goes to its subscription's node and no other
//! ([`CallOptions::node`]), gets what is left of the publish's deadline
//! ([`PublishOptions`]; [`DEFAULT_PUBLISH_TIMEOUT`](super::DEFAULT_PUBLISH_TIMEOUT)
//! without one) and is not retried; a queue group's message goes to another member
//! when one fails. A failed delivery is reported to the publisher
//! ([`BrokerError::Delivery`], or [`BrokerError::DeadlineExceeded`] when the deadline
//! passed) and logged at warn with the subscription's node id, address, topic and
//! error, once per node until a delivery to it succeeds again (then at debug).
//!
//! A slow subscriber does not slow the others or the publisher: each subscription has
//! a bounded buffer ([`super::SUBSCRIBER_BUFFER`]); when it is full,
//! deliveries to it fail with RESOURCE_EXHAUSTED, are counted
//! ([`RegistryBroker::dropped`]) and reported to the publisher as a failed delivery.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use micro_registry::{CachedRegistry, Node, RegisterOptions, Registry};
use micro_transport::Transport;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    Broker, BrokerError, Event, Handler, Message, PublishOptions, SUBSCRIBER_BUFFER,
    SubscribeOptions, Subscriber,
};
use crate::config::{DEFAULT_REGISTER_INTERVAL, DEFAULT_REGISTER_TTL};
use crate::server::Handler as Endpoints;
use crate::{CallOptions, Client, Context, Error, Request, Server, addr};
use tracing::Instrument;

mod subscription;

use self::subscription::{deliver, deregister};

/// The registry name subscriptions are registered under.
pub const BROKER_SERVICE: &str = "micro.broker";
/// The version of subscriptions without a queue group: every one gets every message.
pub const BROADCAST: &str = "broadcast";
/// The gRPC path deliveries are sent to.
const PUBLISH_PATH: &str = "/micro.broker.Broker/Publish";
/// How long looked-up subscribers are trusted without a re-read: the registry's
/// watch keeps them current, this is only a safety net.
const LOOKUP_REFRESH: Duration = Duration::from_secs(600);
/// How many failing subscriber nodes are remembered (for logging once per streak).
const MAX_FAILING: usize = 1024;

/// One message on its way to one subscription.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Delivery {
    #[prost(string, tag = "1")]
    subscriber: String,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(map = "string, string", tag = "3")]
    header: HashMap<String, String>,
    #[prost(bytes = "vec", tag = "4")]
    body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Ack {}

impl crate::Message for Delivery {}
impl crate::Message for Ack {}

/// Publish and subscribe across processes through the registry (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use micro_core::broker::RegistryBroker;
/// use micro_core::registry::MemoryRegistry;
/// use micro_core::transport::TcpTransport;
///
/// let broker = RegistryBroker::new(Arc::new(MemoryRegistry::new()), Arc::new(TcpTransport::default()))
///     .ttl(Duration::from_secs(10))
///     .interval(Duration::from_secs(3));
/// assert_eq!(broker.registration(), (Duration::from_secs(10), Duration::from_secs(3)));
/// ```
#[derive(Debug, Clone)]
pub struct RegistryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    /// Where subscriptions are registered.
    registry: Arc<dyn Registry>,
    /// Where subscribers are looked up (over `registry`).
    cache: CachedRegistry,
    transport: Arc<dyn Transport>,
    /// Delivers, finding nodes through `cache`.
    client: Client,
    listen: String,
    renewal: Mutex<Renewal>,
    connected: AtomicBool,
    next: AtomicU64,
    dropped: AtomicU64,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Deregistrations of ended subscriptions, for `disconnect` to finish.
    leaving: Mutex<Vec<Leaving>>,
    /// Subscriber nodes whose last delivery failed (their failure has been logged).
    failing: Mutex<HashSet<String>>,
    endpoint: tokio::sync::Mutex<Option<Endpoint>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBroker")
            .field("id", &self.id)
            .field("subscriptions", &lock(&self.subscriptions).len())
            .finish_non_exhaustive()
    }
}

/// How subscriptions are registered: their TTL and how often they are renewed.
#[derive(Clone, Copy)]
struct Renewal {
    ttl: Duration,
    interval: Duration,
}

struct Subscription {
    record: micro_registry::Service,
    sender: mpsc::Sender<Event>,
}

/// An ended subscription's deregistration.
enum Leaving {
    /// Under way.
    Task(JoinHandle<()>),
    /// Not started (the subscription ended outside a runtime): `disconnect` does it.
    Record(micro_registry::Service),
}

/// This process's broker endpoint: where deliveries arrive.
struct Endpoint {
    address: String,
    stop: tokio::sync::watch::Sender<bool>,
    reregister: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend {
        broker: "registry",
        message: e.to_string(),
    }
}

fn exceeded(message: impl Into<String>) -> BrokerError {
    BrokerError::DeadlineExceeded {
        broker: "registry",
        message: message.into(),
    }
}

impl RegistryBroker {
    /// A broker over `registry` and `transport`, whose endpoint listens on a free
    /// port of every interface.
    pub fn new(registry: Arc<dyn Registry>, transport: Arc<dyn Transport>) -> Self {
        Self::listening(registry, transport, "")
    }

    /// A broker whose endpoint listens on `listen` (go-micro's forms: `:port`,
    /// `host:port`; empty for a free port of every interface).
    pub fn listening(
        registry: Arc<dyn Registry>,
        transport: Arc<dyn Transport>,
        listen: &str,
    ) -> Self {
        let cache = CachedRegistry::new(Arc::clone(&registry)).ttl(LOOKUP_REFRESH);
        Self {
            inner: Arc::new(Inner {
                id: format!("{BROKER_SERVICE}-{}", crate::id::random_uuid()),
                client: Client::new(Arc::new(cache.clone()), Arc::clone(&transport)),
                cache,
                registry,
                transport,
                listen: addr::listen_address(listen),
                renewal: Mutex::new(Renewal {
                    ttl: DEFAULT_REGISTER_TTL,
                    interval: DEFAULT_REGISTER_INTERVAL,
                }),
                connected: AtomicBool::new(false),
                next: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                subscriptions: Mutex::new(HashMap::new()),
                leaving: Mutex::new(Vec::new()),
                failing: Mutex::new(HashSet::new()),
                endpoint: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// How long a subscription's registration lives unrenewed (default 90 s, the
    /// service default): a process that dies without deregistering is forgotten
    /// after it. Applies to this broker and its clones, from their next registration.
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        lock(&self.inner.renewal).ttl = ttl;
        self
    }

    /// How often subscriptions are registered again (default 30 s); it should be
    /// well under the TTL (one that is not is replaced by a third of the TTL).
    #[must_use]
    pub fn interval(self, interval: Duration) -> Self {
        lock(&self.inner.renewal).interval = interval;
        self
    }

    /// The subscriptions' TTL and renewal interval, as set.
    pub fn registration(&self) -> (Duration, Duration) {
        let renewal = *lock(&self.inner.renewal);
        (renewal.ttl, renewal.interval)
    }

    /// Deliveries refused because a subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        if self.inner.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BrokerError::NotConnected("registry"))
        }
    }

    /// Starts this process's endpoint (once); returns its advertised address.
    async fn endpoint(&self) -> Result<String, BrokerError> {
        let mut endpoint = self.inner.endpoint.lock().await;
        if let Some(existing) = endpoint.as_ref() {
            return Ok(existing.address.clone());
        }
        let weak = Arc::downgrade(&self.inner);
        let publish = Endpoints::new("micro.broker", "Broker").unary(
            "Publish",
            "Delivery",
            "Ack",
            move |_ctx: Context, delivery: Delivery| {
                let weak = weak.clone();
                async move {
                    let inner = weak.upgrade().ok_or_else(|| {
                        Error::service_unavailable(BROKER_SERVICE, "broker stopped")
                    })?;
                    deliver(&inner, delivery)
                }
            },
        );
        let server = Server::new().handle(publish).map_err(backend)?;
        let listener = self
            .inner
            .transport
            .listen(&self.inner.listen)
            .await
            .map_err(backend)?;
        let address = addr::advertise_address(&listener.local_addr());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::server::serve(
            listener,
            server.service(),
            Duration::from_secs(1),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let weak = Arc::downgrade(&self.inner);
        let reregister = tokio::spawn(async move {
            loop {
                let Some(every) = weak.upgrade().map(|inner| inner.renewal().1) else {
                    return;
                };
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.renew().await;
            }
        });
        tracing::debug!(%address, "broker endpoint listening");
        *endpoint = Some(Endpoint {
            address: address.clone(),
            stop,
            reregister,
        });
        Ok(address)
    }

    /// The subscribers of every topic, from the cache (the registry only when the
    /// cache cannot answer, and then not past `deadline`).
    async fn subscribers(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<Arc<Vec<micro_registry::Service>>, BrokerError> {
        if let Some(known) = self.inner.cache.cached(BROKER_SERVICE) {
            return Ok(known);
        }
        // Spawned, so that a lookup this publish stops waiting for still completes
        // and fills the cache for the next one.
        let cache = self.inner.cache.clone();
        let lookup = tokio::spawn(async move { cache.lookup(BROKER_SERVICE).await });
        match tokio::time::timeout_at(deadline, lookup).await {
            Ok(Ok(Ok(services))) => Ok(services),
            // Nobody subscribes to anything.
            Ok(Ok(Err(micro_registry::Error::NotFound(_)))) => Ok(Arc::default()),
            Ok(Ok(Err(e))) => Err(backend(format!(
                "looking up the subscribers of {topic}: {e}"
            ))),
            Ok(Err(e)) => Err(backend(e)),
            Err(_) => Err(exceeded(format!(
                "looking up the subscribers of {topic}: no answer from the registry in time"
            ))),
        }
    }

    /// Sends `delivery` to `node` and no other, giving up at `deadline`; for queue
    /// groups the caller tries another member on failure.
    async fn send(&self, node: &Node, delivery: Delivery, deadline: Instant) -> Result<(), String> {
        let topic = delivery.topic.clone();
        // The deadline as a timeout, so that a timeout's error names what was left.
        let options = CallOptions::new()
            .node(node.id.clone())
            .retries(0)
            .timeout(deadline.saturating_duration_since(Instant::now()));
        let sent = self
            .inner
            .client
            .call::<Delivery, Ack>(
                BROKER_SERVICE,
                PUBLISH_PATH,
                Request::new(delivery, options),
            )
            .await;
        self.inner.outcome(node, &topic, sent.as_ref().err());
        sent.map(drop).map_err(|e| {
            format!(
                "subscriber node {} at {} (topic {topic}): {} (code {})",
                node.id, node.address, e.detail, e.code
            )
        })
    }
}

#[async_trait]
impl Broker for RegistryBroker {
    async fn connect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(true, Ordering::Release);
        Ok(())
    }

    /// Deregisters every subscription (those still open, and those ended whose
    /// deregistration is under way), waits for that, then stops the endpoint.
    async fn disconnect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(false, Ordering::Release);
        // No renewal from here on, so nothing is registered again behind us.
        let endpoint = self.inner.endpoint.lock().await.take();
        if let Some(endpoint) = &endpoint {
            endpoint.reregister.abort();
        }
        let mut records: Vec<_> = lock(&self.inner.subscriptions)
            .drain()
            .map(|(_, s)| s.record)
            .collect();
        let mut tasks = Vec::new();
        for leaving in std::mem::take(&mut *lock(&self.inner.leaving)) {
            match leaving {
                Leaving::Task(task) => tasks.push(task),
                Leaving::Record(record) => records.push(record),
            }
        }
        let registry = self.inner.registry.as_ref();
        futures_util::future::join_all(records.iter().map(|r| deregister(registry, r))).await;
        for task in tasks {
            let _ = task.await;
        }
        if let Some(endpoint) = endpoint {
            let _ = endpoint.stop.send(true);
        }
        Ok(())
    }

    async fn publish(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<(), BrokerError> {
        self.check_connected()?;
        let deadline = options.deadline_or_default();
        if deadline <= Instant::now() {
            return Err(exceeded(format!(
                "the deadline had passed; nothing published on {topic}"
            )));
        }
        let services = self.subscribers(topic, deadline).await?;
        let mut broadcast = Vec::new();
        let mut queues: Vec<Vec<Node>> = Vec::new();
        for service in services.iter() {
            let nodes: Vec<Node> = service
                .nodes
                .iter()
                .filter(|n| n.metadata.get("topic").is_some_and(|t| t == topic))
                .cloned()
                .collect();
            if nodes.is_empty() {
                continue;
            }
            if service.version == BROADCAST {
                broadcast.extend(nodes);
            } else {
                queues.push(nodes);
            }
        }
        let delivery = |node: &Node| Delivery {
            subscriber: node.id.clone(),
            topic: topic.to_string(),
            header: message.header.clone(),
            body: message.body.clone(),
        };
        let mut jobs = Vec::new();
        for node in &broadcast {
            let (this, d, node) = (self.clone(), delivery(node), node.clone());
            // In the publish's span, so that the delivery call is part of its trace.
            jobs.push(tokio::spawn(
                async move { this.send(&node, d, deadline).await }.in_current_span(),
            ));
        }
        for mut members in queues {
            // One member per queue group; another one if it cannot be reached.
            let (this, d) = (self.clone(), delivery(&members[0]));
            jobs.push(tokio::spawn(
                async move {
                    fastrand::shuffle(&mut members);
                    let mut last = String::from("no member of the queue group");
                    for node in &members {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let d = Delivery {
                            subscriber: node.id.clone(),
                            ..d.clone()
                        };
                        match this.send(node, d, deadline).await {
                            Ok(()) => return Ok(()),
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                }
                .in_current_span(),
            ));
        }
        let total = jobs.len();
        let mut failures = Vec::new();
        // Every job gives up at the deadline, so this waits no longer.
        for job in jobs {
            match job.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let (failed, first) = (failures.len(), failures.swap_remove(0));
        if Instant::now() >= deadline {
            Err(exceeded(format!(
                "{failed} of {total} deliveries on {topic} not made in time; first: {first}"
            )))
        } else {
            Err(BrokerError::Delivery {
                failed,
                of: total,
                first,
            })
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError> {
        self.check_connected()?;
        if topic.is_empty() {
            return Err(BrokerError::InvalidTopic(topic.to_string()));
        }
        let address = self.endpoint().await?;
        let id = format!(
            "{}-{}",
            self.inner.id,
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut node = Node::new(id.clone(), address);
        node.metadata.insert("broker".into(), "registry".into());
        node.metadata.insert("topic".into(), topic.to_string());
        let record = micro_registry::Service::new(BROKER_SERVICE)
            .version(
                options
                    .queue
                    .clone()
                    .unwrap_or_else(|| BROADCAST.to_string()),
            )
            .node(node);
        let (sender, receiver) = mpsc::channel::<Event>(SUBSCRIBER_BUFFER);
        lock(&self.inner.subscriptions).insert(
            id.clone(),
            Subscription {
                record: record.clone(),
                sender,
            },
        );
        if let Err(e) = self
            .inner
            .registry
            .register(&record, self.inner.register_options())
            .await
        {
            lock(&self.inner.subscriptions).remove(&id);
            return Err(backend(e));
        }
        tokio::spawn(super::run_subscription(receiver, handler));
        let inner = Arc::downgrade(&self.inner);
        Ok(Subscriber::new(topic, move || {
            let Some(inner) = inner.upgrade() else { return };
            // Dropping the sender ends the subscription's task once its buffer is empty.
            let Some(Subscription { record, .. }) = lock(&inner.subscriptions).remove(&id) else {
                return;
            };
            let leaving = match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let registry = Arc::clone(&inner.registry);
                    Leaving::Task(runtime.spawn(async move {
                        deregister(registry.as_ref(), &record).await;
                    }))
                }
                Err(_) => Leaving::Record(record),
            };
            let mut pending = lock(&inner.leaving);
            pending.retain(|l| !matches!(l, Leaving::Task(t) if t.is_finished()));
            pending.push(leaving);
        }))
    }

    fn name(&self) -> &'static str {
        "registry"
    }
}
