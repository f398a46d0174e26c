//! Publish and subscribe: the `Broker` trait (go-micro's `broker.Broker`).

mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod registry;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{BrokerConfig, BrokerKind};

pub use self::memory::MemoryBroker;
#[cfg(feature = "nats")]
pub use self::nats::NatsBroker;
pub use self::registry::RegistryBroker;

/// How many messages a subscriber may have waiting before new ones are refused.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// go-micro's header naming a message's topic.
pub const HEADER_TOPIC: &str = "Micro-Topic";
/// go-micro's header naming a message's id.
pub const HEADER_ID: &str = "Micro-Id";
/// The header naming a message's encoding.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";

/// Builds the broker `config` names, over `registry` and `transport` (which the
/// default, registry broker uses).
pub fn build(
    config: &BrokerConfig,
    registry: Arc<dyn micro_registry::Registry>,
    transport: Arc<dyn micro_transport::Transport>,
) -> Arc<dyn Broker> {
    let address = config.address.as_deref().unwrap_or_default();
    match config.kind {
        BrokerKind::Memory => Arc::new(MemoryBroker::new()),
        #[cfg(feature = "nats")]
        BrokerKind::Nats if !address.is_empty() => Arc::new(NatsBroker::new(address)),
        #[cfg(feature = "nats")]
        BrokerKind::Nats => Arc::new(NatsBroker::new(nats::DEFAULT_ADDRESS)),
        // Config refuses `nats` in a build without it; a hand-made config falls back.
        _ => Arc::new(RegistryBroker::listening(registry, transport, address)),
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
    /// Publishes `message` on `topic`.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError>;
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
