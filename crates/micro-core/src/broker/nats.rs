//! The NATS broker (feature `nats`), laid out as go-micro's: a go-micro service on
//! the same NATS sees micro's events, and the other way round.
//!
//! - subject = the topic, verbatim;
//! - payload = JSON `{"Header": {...}, "Body": "<base64>"}` (go-micro's
//!   `broker.Message` through Go's `encoding/json`, which writes bytes as base64);
//! - a queue group when the subscription has one, else a plain subscription (every
//!   subscriber gets every message).
//!
//! Payloads that are not this JSON are skipped and counted ([`NatsBroker::malformed`]).
//!
//! Publishing hands the message to async-nats's buffer, which sends it in the
//! background; it waits only when that buffer is full (NATS unreachable and the
//! client reconnecting), and then no longer than the publish's deadline
//! ([`PublishOptions`]; [`DEFAULT_PUBLISH_TIMEOUT`](super::DEFAULT_PUBLISH_TIMEOUT) when
//! it has none). A message published before its deadline may still be lost if NATS
//! goes away before the buffer is sent: NATS core is at most once. The flushes
//! (after subscribing, and on `disconnect`) wait at most [`FLUSH_TIMEOUT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    Broker, BrokerError, Event, Handler, Message, PublishOptions, SubscribeOptions, Subscriber,
};

/// The NATS server used when `MICRO_BROKER_ADDRESS` is not set.
pub const DEFAULT_ADDRESS: &str = "nats://127.0.0.1:4222";

/// The longest a flush waits for the server (after subscribing; on `disconnect`).
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for `client` to flush, at most [`FLUSH_TIMEOUT`].
async fn flush(client: &async_nats::Client) -> Result<(), BrokerError> {
    match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
        Ok(flushed) => flushed.map_err(backend),
        Err(_) => Err(backend(format!(
            "flush: no answer from the server within {FLUSH_TIMEOUT:?}"
        ))),
    }
}

/// go-micro's `broker.Message` as JSON, as received.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "Header", default)]
    header: Option<HashMap<String, String>>,
    #[serde(rename = "Body", default)]
    body: Option<Body>,
}

/// The envelope's `Body`, decoded from base64 as it is read: serde_json hands over
/// the string's bytes (escapes undone) without checking them as UTF-8, and base64
/// accepts nothing but its own alphabet, so the text is read once.
struct Body(Vec<u8>);

impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64;
        impl serde::de::Visitor<'_> for Base64 {
            type Value = Body;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }

            fn visit_bytes<E: serde::de::Error>(self, text: &[u8]) -> Result<Body, E> {
                base64_simd::STANDARD
                    .decode_to_vec(text)
                    .map(Body)
                    .map_err(|e| E::custom(format_args!("Body is not base64: {e}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Body, E> {
                self.visit_bytes(text.as_bytes())
            }
        }
        deserializer.deserialize_bytes(Base64)
    }
}

/// Encodes a message as go-micro's NATS payload: the bytes serde_json writes for
/// `{"Header": {...}, "Body": "<base64>"}`, with the base64 written straight into
/// the payload (it needs no escaping): one buffer, no intermediate string.
pub fn encode(message: &Message) -> Vec<u8> {
    let body_len = base64_simd::STANDARD.encoded_length(message.body.len());
    let mut out = Vec::with_capacity(32 + 64 * message.header.len() + body_len);
    out.extend_from_slice(br#"{"Header":"#);
    // A map of strings always serialises (into a Vec, writing cannot fail).
    if serde_json::to_writer(&mut out, &message.header).is_err() {
        return Vec::new();
    }
    out.extend_from_slice(br#","Body":""#);
    base64_simd::STANDARD.encode_append(&message.body, &mut out);
    out.extend_from_slice(br#""}"#);
    out
}

/// Decodes go-micro's NATS payload.
pub fn decode(payload: &[u8]) -> Result<Message, String> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok(Message {
        header: envelope.header.unwrap_or_default(),
        body: envelope.body.map(|Body(bytes)| bytes).unwrap_or_default(),
    })
}

/// Publish and subscribe through NATS servers.
#[derive(Debug, Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    servers: String,
    /// Connects and disconnects run one at a time.
    connecting: tokio::sync::Mutex<()>,
    /// The connection, read by every publish: behind an `Arc`, since cloning the
    /// client itself touches a dozen counters its connection task shares.
    client: std::sync::RwLock<Option<Arc<async_nats::Client>>>,
    malformed: AtomicU64,
}

impl NatsBroker {
    /// A broker for the servers in `addresses` (`nats://host:port`, comma-separated).
    pub fn new(addresses: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                servers: addresses.into(),
                connecting: tokio::sync::Mutex::new(()),
                client: std::sync::RwLock::new(None),
                malformed: AtomicU64::new(0),
            }),
        }
    }

    /// Received payloads that were not go-micro's JSON (skipped).
    pub fn malformed(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    fn client(&self) -> Result<Arc<async_nats::Client>, BrokerError> {
        self.inner
            .client
            .read()
            // The lock guards a plain swap: a panic elsewhere leaves a usable value.
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(BrokerError::NotConnected("nats"))
    }

    fn set_client(
        &self,
        client: Option<Arc<async_nats::Client>>,
    ) -> Option<Arc<async_nats::Client>> {
        let mut slot = self
            .inner
            .client
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *slot, client)
    }
}

fn backend(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend {
        broker: "nats",
        message: e.to_string(),
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn connect(&self) -> Result<(), BrokerError> {
        let _connecting = self.inner.connecting.lock().await;
        if self.client().is_ok() {
            return Ok(());
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .inner
            .servers
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                BrokerError::Config(format!("NATS address {:?}: {e}", self.inner.servers))
            })?;
        let connected = async_nats::ConnectOptions::new()
            .connect(servers)
            .await
            .map_err(|e| backend(format!("connect to {}: {e}", self.inner.servers)))?;
        self.set_client(Some(Arc::new(connected)));
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), BrokerError> {
        let _connecting = self.inner.connecting.lock().await;
        if let Some(client) = self.set_client(None) {
            // Deliver what was published (if the server answers in time), then close.
            let flushed = flush(&client).await;
            match tokio::time::timeout(FLUSH_TIMEOUT, client.drain()).await {
                Ok(drained) => drained.map_err(backend)?,
                Err(_) => return Err(backend("drain: timed out")),
            }
            flushed?;
        }
        Ok(())
    }

    async fn publish(
        &self,
        topic: &str,
        message: Message,
        options: PublishOptions,
    ) -> Result<(), BrokerError> {
        if topic.is_empty() {
            return Err(BrokerError::InvalidTopic(topic.to_string()));
        }
        let client = self.client()?;
        // Buffered: this waits only while the buffer is full, and never past the
        // deadline. It is tried once first: almost always the buffer has room, and
        // then no timer is armed and no clock read.
        let publish = client.publish(topic.to_string(), encode(&message).into());
        tokio::pin!(publish);
        if let std::task::Poll::Ready(published) = futures_util::poll!(&mut publish) {
            return published.map_err(backend);
        }
        let deadline = options.deadline_or_default();
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(published) => published.map_err(backend),
            Err(_) => Err(BrokerError::DeadlineExceeded {
                broker: "nats",
                message: format!("the client's buffer for {topic} stayed full"),
            }),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError> {
        if topic.is_empty() {
            return Err(BrokerError::InvalidTopic(topic.to_string()));
        }
        let client = self.client()?;
        let mut subscription = match options.queue {
            Some(queue) => client.queue_subscribe(topic.to_string(), queue).await,
            None => client.subscribe(topic.to_string()).await,
        }
        .map_err(backend)?;
        // Sent now; the server applies it in order with this connection's other
        // commands, but a message published on another connection at the same moment
        // may reach it first (as with any NATS client).
        flush(&client).await?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // One cancellation future for the subscription's life, not one per message.
            let cancelled = stopped.cancelled();
            tokio::pin!(cancelled);
            loop {
                let next = tokio::select! {
                    () = &mut cancelled => break,
                    next = subscription.next() => next,
                };
                let Some(received) = next else { break };
                let message = match decode(&received.payload) {
                    Ok(message) => message,
                    Err(e) => {
                        inner.malformed.fetch_add(1, Ordering::Relaxed);
                        crate::observe::dropped("nats", "malformed");
                        tracing::warn!(subject = %received.subject, error = %e, "skipping a NATS message that is not go-micro's JSON");
                        continue;
                    }
                };
                let event = Event {
                    topic: received.subject.to_string(),
                    message,
                };
                if let Err(e) = handler(event).await {
                    tracing::warn!(subject = %received.subject, error = %e, "subscriber failed on a message");
                }
            }
            let _ = subscription.unsubscribe().await;
        });
        Ok(Subscriber::new(topic, move || stop.cancel()))
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn go_micro_payload_round_trips() {
        // As go-micro writes it: Go's encoding/json of broker.Message.
        let go = br#"{"Header":{"Content-Type":"application/json","Micro-Topic":"events"},"Body":"eyJpZCI6IjEifQ=="}"#;
        let message = decode(go).unwrap();
        assert_eq!(message.body, br#"{"id":"1"}"#);
        assert_eq!(message.header["Micro-Topic"], "events");
        assert_eq!(decode(&encode(&message)).unwrap(), message);
        // Byte for byte what serde_json writes for go-micro's layout.
        let expected = serde_json::json!({
            "Header": message.header,
            "Body": base64::engine::general_purpose::STANDARD.encode(&message.body),
        });
        let encoded: serde_json::Value = serde_json::from_slice(&encode(&message)).unwrap();
        assert_eq!(encoded, expected);
        let plain = Message {
            header: HashMap::from([("Micro-Topic".to_string(), "a\"b".to_string())]),
            body: vec![0xff; 1024],
        };
        #[derive(serde::Serialize)]
        struct Written<'a> {
            #[serde(rename = "Header")]
            header: &'a HashMap<String, String>,
            #[serde(rename = "Body")]
            body: String,
        }
        let written = serde_json::to_vec(&Written {
            header: &plain.header,
            body: base64::engine::general_purpose::STANDARD.encode(&plain.body),
        })
        .unwrap();
        assert_eq!(encode(&plain), written);
        assert_eq!(decode(&written).unwrap(), plain);
        // An escaped body (legal JSON) still decodes.
        assert_eq!(
            decode(br#"{"Body":"eyJpZCI6IjEifQ\u003d\u003d"}"#)
                .unwrap()
                .body,
            br#"{"id":"1"}"#
        );
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"Body":"%%%"}"#).is_err());
        assert_eq!(
            decode(br#"{"Header":null,"Body":null}"#).unwrap(),
            Message::default()
        );
    }
}
