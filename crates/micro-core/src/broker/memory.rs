//! An in-process broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    Broker, BrokerError, Event, Handler, Message, PublishOptions, SUBSCRIBER_BUFFER,
    SubscribeOptions, Subscriber,
};

/// A broker inside one process. Each subscriber has its own task and a bounded
/// buffer: a slow subscriber slows nobody else; when its buffer is full, messages
/// for it are dropped and counted ([`MemoryBroker::dropped`]). Publishing never
/// waits (it hands the message to the buffers at once); a publish whose deadline
/// already passed delivers nothing and fails with [`BrokerError::DeadlineExceeded`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_core::broker::BrokerError> {
/// use micro_core::broker::{handler, Broker, MemoryBroker, Message, PublishOptions, SubscribeOptions};
///
/// let broker = MemoryBroker::new();
/// broker.connect().await?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let _sub = broker
///     .subscribe("events", handler(move |e| { let tx = tx.clone(); async move { let _ = tx.send(e); Ok(()) } }), SubscribeOptions::default())
///     .await?;
/// broker.publish("events", Message { body: b"hi".to_vec(), ..Message::default() }, PublishOptions::default()).await?;
/// assert_eq!(rx.recv().await.map(|e| e.message.body), Some(b"hi".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicBool,
    next_id: AtomicU64,
    dropped: AtomicU64,
    topics: Mutex<HashMap<String, Vec<Subscription>>>,
    round_robin: AtomicUsize,
}

#[derive(Debug)]
struct Subscription {
    id: u64,
    queue: Option<String>,
    sender: mpsc::Sender<Event>,
}

impl MemoryBroker {
    /// A broker with no subscribers; call [`Broker::connect`] before use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages dropped because a subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Vec<Subscription>>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        if self.inner.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BrokerError::NotConnected("memory"))
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn connect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(true, Ordering::Release);
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), BrokerError> {
        self.inner.connected.store(false, Ordering::Release);
        // Dropping the senders ends every subscriber task.
        self.topics().clear();
        Ok(())
    }

    async fn publish(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<(), BrokerError> {
        self.check_connected()?;
        if options
            .deadline
            .is_some_and(|d| d <= tokio::time::Instant::now())
        {
            return Err(BrokerError::DeadlineExceeded {
                broker: "memory",
                message: format!("nothing delivered on {topic}"),
            });
        }
        let topics = self.topics();
        let Some(subscriptions) = topics.get(topic) else {
            return Ok(());
        };
        let event = Event {
            topic: topic.to_string(),
            message,
        };
        let mut targets: Vec<&Subscription> = Vec::new();
        let mut queues: HashMap<&str, Vec<&Subscription>> = HashMap::new();
        for subscription in subscriptions {
            match &subscription.queue {
                None => targets.push(subscription),
                Some(queue) => queues.entry(queue.as_str()).or_default().push(subscription),
            }
        }
        let turn = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        for members in queues.values() {
            targets.push(members[turn % members.len()]);
        }
        for target in targets {
            if target.sender.try_send(event.clone()).is_err() {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic,
                    subscriber = target.id,
                    "subscriber buffer full; message dropped"
                );
            }
        }
        Ok(())
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
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel::<Event>(SUBSCRIBER_BUFFER);
        self.topics()
            .entry(topic.to_string())
            .or_default()
            .push(Subscription {
                id,
                queue: options.queue,
                sender,
            });
        tokio::spawn(super::run_subscription(receiver, handler));
        let broker = self.clone();
        let name = topic.to_string();
        Ok(Subscriber::new(topic, move || {
            let mut topics = broker.topics();
            if let Some(list) = topics.get_mut(&name) {
                list.retain(|s| s.id != id);
                if list.is_empty() {
                    topics.remove(&name);
                }
            }
        }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::super::handler;
    use super::*;
    use std::time::Duration;

    fn counting(counter: Arc<AtomicUsize>) -> Handler {
        handler(move |_| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn fan_out_and_queue_groups() {
        let broker = MemoryBroker::new();
        broker.connect().await.unwrap();
        let (a, b, q1, q2) = (
            Arc::default(),
            Arc::default(),
            Arc::default(),
            Arc::default(),
        );
        let _subs = [
            broker
                .subscribe("t", counting(Arc::clone(&a)), SubscribeOptions::default())
                .await
                .unwrap(),
            broker
                .subscribe("t", counting(Arc::clone(&b)), SubscribeOptions::default())
                .await
                .unwrap(),
            broker
                .subscribe("t", counting(Arc::clone(&q1)), SubscribeOptions::queue("q"))
                .await
                .unwrap(),
            broker
                .subscribe("t", counting(Arc::clone(&q2)), SubscribeOptions::queue("q"))
                .await
                .unwrap(),
        ];
        for _ in 0..10 {
            broker
                .publish("t", Message::default(), PublishOptions::default())
                .await
                .unwrap();
        }
        settle().await;
        assert_eq!(a.load(Ordering::SeqCst), 10);
        assert_eq!(b.load(Ordering::SeqCst), 10);
        assert_eq!(q1.load(Ordering::SeqCst) + q2.load(Ordering::SeqCst), 10);
        assert!(q1.load(Ordering::SeqCst) > 0 && q2.load(Ordering::SeqCst) > 0);
    }

    #[tokio::test]
    async fn unsubscribed_handlers_get_nothing_and_disconnected_publish_fails() {
        let broker = MemoryBroker::new();
        broker.connect().await.unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let sub = broker
            .subscribe(
                "t",
                counting(Arc::clone(&count)),
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
        sub.unsubscribe();
        broker
            .publish("t", Message::default(), PublishOptions::default())
            .await
            .unwrap();
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 0);
        // A deadline already passed: nothing is handed over.
        let sub = broker
            .subscribe(
                "t",
                counting(Arc::clone(&count)),
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
        let passed = PublishOptions::default().deadline(tokio::time::Instant::now());
        assert!(matches!(
            broker.publish("t", Message::default(), passed).await,
            Err(BrokerError::DeadlineExceeded { .. })
        ));
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 0);
        drop(sub);
        broker.disconnect().await.unwrap();
        assert_eq!(
            broker
                .publish("t", Message::default(), PublishOptions::default())
                .await,
            Err(BrokerError::NotConnected("memory"))
        );
    }
}
