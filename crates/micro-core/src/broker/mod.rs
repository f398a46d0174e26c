//! Publish and subscribe: the `Broker` trait (go-micro's `broker.Broker`).
//!
//! # Deadlines, and work whose caller gave up
//!
//! A publish waits no longer than its deadline ([`PublishOptions::deadline`]; a
//! [`Publisher`](crate::event::Publisher) takes it from the request's options, so a
//! handler that publishes with `ctx.call_options()` passes on what is left of its
//! caller's deadline). Past it, `publish` returns [`BrokerError::DeadlineExceeded`]
//! (a 408 / DEADLINE_EXCEEDED through the publisher). Without a deadline each broker
//! bounds a publish itself: [`DEFAULT_PUBLISH_TIMEOUT`].
//!
//! Events are delivered at most once, and a publish that gave up is not undone:
//!
//! - deliveries already handed over stay delivered (a subscriber's buffer took them;
//!   its handler runs whatever happens to the publisher or its caller);
//! - deliveries still on their way when the deadline passes are abandoned: the
//!   subscriber may or may not get the message, and nothing retries it;
//! - nothing is stored for later: a message nobody could take now is lost, and the
//!   publisher is told (an error naming what failed) and logs it.
//!
//! Whatever a handler did before publishing is its own to keep or undo. A handler
//! should check its [`Context`](crate::Context) (`remaining()`, `is_cancelled()`)
//! before it commits work, since its caller may have given up; the shippy
//! `consignment` example stores a booking only while its caller still waits, and
//! announces it afterwards, so a late or failed announcement never fails a booking
//! that was stored.

mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod registry;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::CallOptions;
use crate::config::{BrokerKind, Config};

pub use self::memory::MemoryBroker;
#[cfg(feature = "nats")]
pub use self::nats::NatsBroker;
pub use self::registry::RegistryBroker;

/// How many messages a subscriber may have waiting before new ones are refused.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// How long a publish may take when its options give no deadline.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// go-micro's header naming a message's topic.
pub const HEADER_TOPIC: &str = "Micro-Topic";
/// go-micro's header naming a message's id.
pub const HEADER_ID: &str = "Micro-Id";
/// The header naming a message's encoding.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";

/// Builds the broker `config.broker` names, over `registry` and `transport` (which
/// the default, registry broker uses). The registry broker registers its
/// subscriptions with the service's register TTL and interval
/// (`config.register_ttl`, `config.register_interval`).
pub fn build(
    config: &Config,
    registry: Arc<dyn micro_registry::Registry>,
    transport: Arc<dyn micro_transport::Transport>,
) -> Arc<dyn Broker> {
    let address = config.broker.address.as_deref().unwrap_or_default();
    match config.broker.kind {
        BrokerKind::Memory => Arc::new(MemoryBroker::new()),
        #[cfg(feature = "nats")]
        BrokerKind::Nats if !address.is_empty() => Arc::new(NatsBroker::new(address)),
        #[cfg(feature = "nats")]
        BrokerKind::Nats => Arc::new(NatsBroker::new(nats::DEFAULT_ADDRESS)),
        // Config refuses `nats` in a build without it; a hand-made config falls back.
        _ => Arc::new(
            RegistryBroker::listening(registry, transport, address)
                .ttl(config.register_ttl)
                .interval(config.register_interval),
        ),
    }
}

/// A message on a topic: headers and an opaque body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Headers (`Content-Type`, `Micro-Topic`, ...).
    pub header: HashMap<String, String>,
    /// The encoded payload.
    pub body: Vec<u8>,
}

/// What a subscriber's handler receives.
#[derive(Clone, Debug)]
pub struct Event {
    /// The topic it was published on.
    pub topic: String,
    /// The message.
    pub message: Message,
}

/// Broker failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Not connected (call `connect` first, or it was disconnected).
    #[error("{0} broker: not connected")]
    NotConnected(&'static str),
    /// The topic is not usable.
    #[error("invalid topic {0:?}")]
    InvalidTopic(String),
    /// A handler failed on a message.
    #[error("handler: {0}")]
    Handler(String),
    /// Some deliveries of a published message failed.
    #[error("{failed} of {of} deliveries failed; first: {first}")]
    Delivery {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        of: usize,
        /// Why the first one failed.
        first: String,
    },
    /// The deadline passed before the message was handed to every subscriber (or
    /// to the backend). Deliveries already made stand; the others were abandoned.
    #[error("{broker} broker: deadline exceeded: {message}")]
    DeadlineExceeded {
        /// The broker's name.
        broker: &'static str,
        /// What was still under way.
        message: String,
    },
    /// The configuration (options or environment) is not usable.
    #[error("broker configuration: {0}")]
    Config(String),
    /// The backend failed.
    #[error("{broker} broker: {message}")]
    Backend {
        /// The broker's name.
        broker: &'static str,
        /// What failed.
        message: String,
    },
}

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>;

/// Handles the events of a subscription.
pub type Handler = Arc<dyn Fn(Event) -> HandlerFuture + Send + Sync>;

/// Options for [`Broker::subscribe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// A queue group: each message goes to one member of the group. `None`: every
    /// subscriber gets every message.
    pub queue: Option<String>,
}

impl SubscribeOptions {
    /// Subscribe as a member of a queue group.
    pub fn queue(name: impl Into<String>) -> Self {
        Self {
            queue: Some(name.into()),
        }
    }
}

/// Options for [`Broker::publish`] (go-micro's `broker.PublishOptions`).
///
/// ```
/// use std::time::Duration;
/// use micro_core::broker::PublishOptions;
///
/// let options = PublishOptions::default().timeout(Duration::from_secs(1));
/// assert!(options.deadline.is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// When the publisher stops waiting: deliveries not made by then are abandoned
    /// and the publish fails with [`BrokerError::DeadlineExceeded`]. `None`: the
    /// broker's own bound, [`DEFAULT_PUBLISH_TIMEOUT`].
    pub deadline: Option<Instant>,
}

impl PublishOptions {
    /// Gives up at `deadline`.
    #[must_use]
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Gives up `timeout` from now.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.deadline(Instant::now() + timeout)
    }

    /// The deadline, or [`DEFAULT_PUBLISH_TIMEOUT`] from now when there is none.
    pub(crate) fn deadline_or_default(&self) -> Instant {
        self.deadline
            .unwrap_or_else(|| Instant::now() + DEFAULT_PUBLISH_TIMEOUT)
    }

    /// The deadline of a call's options: the earlier of its deadline (a handler's
    /// `ctx.call_options()` carries its caller's) and its timeout from now.
    pub(crate) fn from_call(options: &CallOptions) -> Self {
        Self {
            deadline: options.deadline_at(None, Instant::now()),
        }
    }
}

/// Runs `publish` (through `broker`) until `options.deadline` (unbounded without one:
/// the broker bounds it); a deadline already passed runs nothing.
pub(crate) async fn within(
    options: &PublishOptions,
    broker: &'static str,
    topic: &str,
    publish: impl Future<Output = Result<(), BrokerError>>,
) -> Result<(), BrokerError> {
    let Some(deadline) = options.deadline else {
        return publish.await;
    };
    let exceeded = |what: &str| BrokerError::DeadlineExceeded {
        broker,
        message: format!("{what} on {topic}"),
    };
    if deadline <= Instant::now() {
        return Err(exceeded("the deadline had passed; nothing published"));
    }
    tokio::time::timeout_at(deadline, publish)
        .await
        .unwrap_or_else(|_| Err(exceeded("publishing did not finish")))
}

/// A subscription; drop it or call [`Subscriber::unsubscribe`] to end it.
pub struct Subscriber {
    topic: String,
    unsubscribe: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Subscriber {
    /// A subscription to `topic` that runs `unsubscribe` when it ends. For broker
    /// implementations.
    pub fn new(topic: impl Into<String>, unsubscribe: impl FnOnce() + Send + 'static) -> Self {
        Self {
            topic: topic.into(),
            unsubscribe: Some(Box::new(unsubscribe)),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Ends the subscription.
    pub fn unsubscribe(mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }
}

/// Publish and subscribe between services.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Connects to the backend.
    async fn connect(&self) -> Result<(), BrokerError>;
    /// Disconnects; subscriptions stop receiving.
    async fn disconnect(&self) -> Result<(), BrokerError>;
    /// Publishes `message` on `topic`, waiting no longer than `options.deadline`
    /// (see the module docs for what happens when it passes).
    async fn publish(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<(), BrokerError>;
    /// Calls `handler` for each message on `topic`.
    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError>;
    /// The broker's name: `memory`, ...
    fn name(&self) -> &'static str;
}

/// Feeds a subscription's buffered events to its handler, one at a time, until the
/// buffer's sender is dropped. A failing handler is logged; the next event still comes.
pub(crate) async fn run_subscription(
    mut events: tokio::sync::mpsc::Receiver<Event>,
    handler: Handler,
) {
    while let Some(event) = events.recv().await {
        let topic = event.topic.clone();
        if let Err(e) = handler(event).await {
            tracing::warn!(%topic, error = %e, "subscriber failed on a message");
        }
    }
}

/// Wraps an async closure as a [`Handler`].
///
/// ```
/// use micro_core::broker::{handler, Event};
///
/// let h = handler(|event: Event| async move {
///     println!("{} bytes on {}", event.message.body.len(), event.topic);
///     Ok(())
/// });
/// ```
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BrokerError>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}
