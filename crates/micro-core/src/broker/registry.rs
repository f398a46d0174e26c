//! The default cross-process broker: no server to run, as go-micro's HTTP broker.
//!
//! Each subscription registers a node of the service [`BROKER_SERVICE`] in the
//! registry: version = its queue group (or [`BROADCAST`]), metadata `topic` = its
//! topic, address = this process's broker endpoint. Publishing looks those nodes up
//! (through the client's registry cache) and delivers to every broadcast subscriber
//! of the topic and to one member of each queue group, over micro's own transport
//! (gRPC `/micro.broker.Broker/Publish`).
//!
//! A slow subscriber does not slow the others or the publisher: each subscription has
//! a bounded buffer ([`super::SUBSCRIBER_BUFFER`]); when it is full,
//! deliveries to it fail with RESOURCE_EXHAUSTED, are counted
//! ([`RegistryBroker::dropped`]) and reported to the publisher as a failed delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use micro_registry::{Node, RegisterOptions, Registry};
use micro_transport::Transport;
use tokio::sync::mpsc;

use super::{
    Broker, BrokerError, Event, Handler, Message, SUBSCRIBER_BUFFER, SubscribeOptions, Subscriber,
};
use crate::selector::Selector;
use crate::server::Handler as Endpoints;
use crate::{CallOptions, Client, Context, Error, Request, Server, addr};

/// The registry name subscriptions are registered under.
pub const BROKER_SERVICE: &str = "micro.broker";
/// The version of subscriptions without a queue group: every one gets every message.
pub const BROADCAST: &str = "broadcast";
/// How often subscriptions are registered again.
const REREGISTER: Duration = Duration::from_secs(30);
/// How long a subscription's registration lives unrenewed.
const TTL: Duration = Duration::from_secs(90);

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
#[derive(Debug, Clone)]
pub struct RegistryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    registry: Arc<dyn Registry>,
    transport: Arc<dyn Transport>,
    client: Client,
    listen: String,
    connected: AtomicBool,
    next: AtomicU64,
    dropped: AtomicU64,
    subscriptions: Mutex<HashMap<String, Subscription>>,
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

struct Subscription {
    record: micro_registry::Service,
    sender: mpsc::Sender<Event>,
}

/// This process's broker endpoint: where deliveries arrive.
struct Endpoint {
    address: String,
    stop: tokio::sync::watch::Sender<bool>,
    reregister: tokio::task::JoinHandle<()>,
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

/// Picks the node with a given id (deliveries go to one subscription's node).
#[derive(Debug)]
struct NodeId(String);

impl Selector for NodeId {
    fn select(&self, _service: &str, nodes: &[&Node]) -> usize {
        nodes
            .iter()
            .position(|n| n.id == self.0)
            .unwrap_or(usize::MAX)
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
        Self {
            inner: Arc::new(Inner {
                id: format!("{BROKER_SERVICE}-{}", uuid::Uuid::new_v4()),
                client: Client::new(Arc::clone(&registry), Arc::clone(&transport)),
                registry,
                transport,
                listen: addr::listen_address(listen),
                connected: AtomicBool::new(false),
                next: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                subscriptions: Mutex::new(HashMap::new()),
                endpoint: tokio::sync::Mutex::new(None),
            }),
        }
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
            let mut tick = tokio::time::interval(REREGISTER);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let records: Vec<_> = lock(&inner.subscriptions)
                    .values()
                    .map(|s| s.record.clone())
                    .collect();
                for record in records {
                    if let Err(e) = inner
                        .registry
                        .register(&record, RegisterOptions::default().ttl(TTL))
                        .await
                    {
                        tracing::warn!(error = %e, "broker: re-registering a subscription failed");
                    }
                }
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

    /// Sends `delivery` to `node`; for queue groups the caller tries another member
    /// on failure.
    async fn send(&self, node: &Node, delivery: Delivery) -> Result<(), Error> {
        let options = CallOptions::new()
            .selector(NodeId(node.id.clone()))
            .retries(0)
            .timeout(Duration::from_secs(5));
        self.inner
            .client
            .call::<Delivery, Ack>(
                BROKER_SERVICE,
                "/micro.broker.Broker/Publish",
                Request::new(delivery, options),
            )
            .await
            .map(drop)
    }
}

/// Hands a delivery to its subscription's buffer.
fn deliver(inner: &Inner, delivery: Delivery) -> Result<Ack, Error> {
    let sender = lock(&inner.subscriptions)
        .get(&delivery.subscriber)
        .map(|s| s.sender.clone())
        .ok_or_else(|| {
            Error::not_found(
                BROKER_SERVICE,
                format!("no subscription {}", delivery.subscriber),
            )
        })?;
    let event = Event {
        topic: delivery.topic,
        message: Message {
            header: delivery.header,
            body: delivery.body,
        },
    };
    sender.try_send(event).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subscriber = %delivery.subscriber, "subscriber buffer full; message refused");
            Error::new(BROKER_SERVICE, "subscriber buffer full", 429)
        }
        mpsc::error::TrySendError::Closed(_) => Error::not_found(BROKER_SERVICE, "subscription closed"),
    })?;
    Ok(Ack {})
}

#[async_trait]
impl Broker for RegistryBroker {
    async fn connect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(true, Ordering::Release);
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(false, Ordering::Release);
        let records: Vec<_> = lock(&self.inner.subscriptions)
            .drain()
            .map(|(_, s)| s.record)
            .collect();
        for record in records {
            if let Err(e) = self.inner.registry.deregister(&record).await {
                tracing::warn!(error = %e, "broker: deregistering a subscription failed");
            }
        }
        if let Some(endpoint) = self.inner.endpoint.lock().await.take() {
            endpoint.reregister.abort();
            let _ = endpoint.stop.send(true);
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        self.check_connected()?;
        let services = match self
            .inner
            .client
            .registry()
            .get_service(BROKER_SERVICE)
            .await
        {
            Ok(services) => services,
            // Nobody subscribes to anything: nothing to deliver.
            Err(micro_registry::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(backend(e)),
        };
        let mut broadcast = Vec::new();
        let mut queues: Vec<Vec<Node>> = Vec::new();
        for service in services {
            let nodes: Vec<Node> = service
                .nodes
                .into_iter()
                .filter(|n| n.metadata.get("topic").is_some_and(|t| t == topic))
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
            jobs.push(tokio::spawn(async move { this.send(&node, d).await }));
        }
        for mut members in queues {
            // One member per queue group; another one if it cannot be reached.
            let (this, d) = (self.clone(), delivery(&members[0]));
            jobs.push(tokio::spawn(async move {
                use rand::seq::SliceRandom;
                members.shuffle(&mut rand::rng());
                let mut last =
                    Error::service_unavailable(BROKER_SERVICE, "no member of the queue group");
                for node in &members {
                    let d = Delivery {
                        subscriber: node.id.clone(),
                        ..d.clone()
                    };
                    match this.send(node, d).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }));
        }
        let total = jobs.len();
        let mut failures = Vec::new();
        for job in jobs {
            match job.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e.detail),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BrokerError::Delivery {
                failed: failures.len(),
                of: total,
                first: failures.swap_remove(0),
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
            .register(&record, RegisterOptions::default().ttl(TTL))
            .await
        {
            lock(&self.inner.subscriptions).remove(&id);
            return Err(backend(e));
        }
        tokio::spawn(super::run_subscription(receiver, handler));
        let inner = Arc::downgrade(&self.inner);
        Ok(Subscriber::new(topic, move || {
            let Some(inner) = inner.upgrade() else { return };
            let removed = lock(&inner.subscriptions).remove(&id);
            if let (Some(subscription), Ok(runtime)) =
                (removed, tokio::runtime::Handle::try_current())
            {
                runtime.spawn(async move {
                    if let Err(e) = inner.registry.deregister(&subscription.record).await {
                        tracing::warn!(error = %e, "broker: deregistering a subscription failed");
                    }
                });
            }
        }))
    }

    fn name(&self) -> &'static str {
        "registry"
    }
}
