//! `publish` and `subscribe`: events through the configured broker.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use micro_core::Error;
use micro_core::broker::{
    Broker, Event, HEADER_CONTENT_TYPE, HEADER_ID, HEADER_TOPIC, Message, PublishOptions,
    SubscribeOptions,
};
use serde_json::json;

use crate::args::Output;
use crate::exit::CliError;
use crate::output::line;

/// A random id for a message, in the UUID form go-micro uses.
fn message_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// `micro publish <topic> <json>`: one JSON message (`Content-Type: application/json`,
/// with go-micro's `Micro-Topic` and `Micro-Id` headers), as a service's publisher
/// sends it with `.json()`.
pub async fn publish(
    broker: Arc<dyn Broker>,
    topic: &str,
    message: Option<String>,
    timeout: Duration,
) -> Result<(), CliError> {
    let body = match message {
        Some(text) => text.into_bytes(),
        None if std::io::stdin().is_terminal() => {
            return Err(Error::bad_request(
                "go.micro.broker",
                "no message: give it as an argument or on stdin",
            )
            .into());
        }
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .take(micro_core::codec::DEFAULT_MAX_MESSAGE_SIZE as u64)
                .read_to_end(&mut body)?;
            body
        }
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
        Error::bad_request(
            "go.micro.broker",
            format!("the message is not valid JSON: {e}"),
        )
    })?;
    let header = HashMap::from([
        (
            HEADER_CONTENT_TYPE.to_string(),
            "application/json".to_string(),
        ),
        (HEADER_TOPIC.to_string(), topic.to_string()),
        (HEADER_ID.to_string(), message_id()),
    ]);
    let published = broker
        .publish(
            topic,
            Message { header, body },
            PublishOptions::default().timeout(timeout),
        )
        .await;
    let _ = broker.disconnect().await;
    published?;
    Ok(())
}

/// `micro subscribe <topic>`: prints each message as it comes, until Ctrl-C.
pub async fn subscribe(
    broker: Arc<dyn Broker>,
    topic: &str,
    queue: Option<String>,
    output: Output,
) -> Result<(), CliError> {
    let options = match queue {
        Some(name) => SubscribeOptions::queue(name),
        None => SubscribeOptions::default(),
    };
    let handler = micro_core::broker::handler(move |event: Event| async move {
        let body: serde_json::Value =
            serde_json::from_slice(&event.message.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&event.message.body).into_owned())
            });
        let text = match output {
            Output::Json => json!({
                "topic": event.topic,
                "header": event.message.header,
                "body": body,
            })
            .to_string(),
            Output::Text => format!("{}  {}", event.topic, body),
        };
        line(&text).map_err(|e| micro_core::broker::BrokerError::Handler(e.to_string()))
    });
    let subscriber = broker.subscribe(topic, handler, options).await?;
    tracing::info!(topic, "subscribed");
    crate::interrupted().await;
    subscriber.unsubscribe();
    let _ = broker.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_look_like_uuids() {
        let id = super::message_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4);
    }
}
