//! A subscription's life (registration, renewal, deregistration) and how a delivery
//! reaches its buffer.

use super::*;

impl Inner {
    /// The TTL, and how often to renew (the interval, unless it is not under the TTL).
    pub(super) fn renewal(&self) -> (Duration, Duration) {
        let Renewal { ttl, interval } = *lock(&self.renewal);
        let every = if interval.is_zero() || interval >= ttl {
            ttl / 3
        } else {
            interval
        };
        (ttl, every.max(Duration::from_millis(10)))
    }

    pub(super) fn register_options(&self) -> RegisterOptions {
        RegisterOptions::default().ttl(self.renewal().0)
    }

    /// Registers every current subscription again.
    pub(super) async fn renew(&self) {
        let records: Vec<(String, micro_registry::Service)> = lock(&self.subscriptions)
            .iter()
            .map(|(id, s)| (id.clone(), s.record.clone()))
            .collect();
        for (id, record) in records {
            if let Err(e) = self
                .registry
                .register(&record, self.register_options())
                .await
            {
                tracing::warn!(subscription = %id, error = %e, "broker: renewing a subscription failed");
            } else if !lock(&self.subscriptions).contains_key(&id) {
                // It ended while this renewal was under way: take it out again.
                deregister(self.registry.as_ref(), &record).await;
            }
        }
    }

    /// Logs a delivery's outcome: a failure at warn once per node until a delivery to
    /// it succeeds again.
    pub(super) fn outcome(&self, node: &Node, topic: &str, error: Option<&Error>) {
        let mut failing = lock(&self.failing);
        let Some(error) = error else {
            if failing.remove(&node.id) {
                tracing::info!(node = %node.id, address = %node.address, topic, "broker: delivering to a subscriber again");
            }
            return;
        };
        if failing.len() >= MAX_FAILING {
            failing.clear();
        }
        if failing.insert(node.id.clone()) {
            tracing::warn!(
                node = %node.id,
                address = %node.address,
                topic,
                code = error.code,
                error = %error.detail,
                "broker: delivery to a subscriber failed (later failures to this node are logged at debug until one succeeds)"
            );
        } else {
            tracing::debug!(node = %node.id, address = %node.address, topic, code = error.code, error = %error.detail, "broker: delivery to a subscriber failed again");
        }
    }
}

/// Deregisters a subscription's node, logging a failure.
pub(super) async fn deregister(registry: &dyn Registry, record: &micro_registry::Service) {
    if let Err(e) = registry.deregister(record).await {
        let node = record
            .nodes
            .first()
            .map(|n| n.id.as_str())
            .unwrap_or_default();
        tracing::warn!(%node, error = %e, "broker: deregistering a subscription failed");
    }
}

/// Hands a delivery to its subscription's buffer.
pub(super) fn deliver(inner: &Inner, delivery: Delivery) -> Result<Ack, Error> {
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
            crate::observe::dropped("registry", "buffer_full");
            tracing::warn!(subscriber = %delivery.subscriber, "subscriber buffer full; message refused");
            Error::new(BROKER_SERVICE, "subscriber buffer full", 429)
        }
        mpsc::error::TrySendError::Closed(_) => Error::not_found(BROKER_SERVICE, "subscription closed"),
    })?;
    Ok(Ack {})
}
