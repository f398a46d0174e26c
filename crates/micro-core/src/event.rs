//! Typed events on top of the broker: [`Publisher`] and [`Service::subscribe`](crate::Service::subscribe).
//!
//! Messages travel as protobuf (`Content-Type: application/protobuf`) or, on request,
//! JSON (`application/json`); subscribers read either. Headers carry go-micro's
//! `Micro-Topic` and `Micro-Id`, and the publisher's metadata.
//!
//! A publish waits no longer than its request's deadline: the earlier of the options'
//! deadline and timeout, so `Request::new(message, ctx.call_options())` in a handler
//! gives the broker what is left of the caller's deadline, and a deadline that passed
//! publishes nothing. Past it, [`Publisher::publish`] fails with a 408
//! (DEADLINE_EXCEEDED); deliveries made by then stand, the rest are abandoned, and
//! nothing is retried later (see [`crate::broker`] on work whose caller gave up).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::broker::{
    Broker, BrokerError, Event, HEADER_CONTENT_TYPE, HEADER_ID, HEADER_TOPIC, Handler,
    HandlerFuture, PublishOptions,
};
use crate::codec::{DEFAULT_MAX_MESSAGE_SIZE, Message};
use crate::telemetry::{self, TARGET};
use crate::{ContentType, Context, Error, IntoRequest, Metadata, Request};
use tracing::Instrument;

const PROTOBUF: &str = "application/protobuf";
const JSON: &str = "application/json";

/// What an event's envelope needs beyond its body, topic and headers: the
/// subscriber's id and the field tags and lengths of the registry broker's delivery.
const ENVELOPE_RESERVE: usize = 256;
/// What each header adds beyond its key and value: a map entry's tags and lengths.
const HEADER_OVERHEAD: usize = 18;

/// Publishes messages of type `M` on one topic (go-micro's `micro.NewEvent`).
///
/// A [`Service`](crate::Service) hands out publishers through its broker:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// # #[derive(Clone, PartialEq, micro_core::prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize)]
/// # #[serde(crate = "micro_core::serde")]
/// # struct Created { #[prost(string, tag = "1")] id: String }
/// # micro_core::json_message!(Created);
/// let service = micro_core::Service::new("go.micro.srv.consignment")?;
/// let created = service.publisher::<Created>("consignment.created");
/// created.publish(Created { id: "c1".into() }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher<M> {
    topic: String,
    broker: Arc<dyn Broker>,
    max_message_size: usize,
    _message: PhantomData<fn(M)>,
}

impl<M: Message> Publisher<M> {
    /// A publisher on `topic`, through `broker`.
    pub fn new(topic: impl Into<String>, broker: Arc<dyn Broker>) -> Self {
        Self {
            topic: topic.into(),
            broker,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            _message: PhantomData,
        }
    }

    /// The largest event sent, body, topic and headers together (default 4 MiB, the
    /// servers' and clients' message limit): a larger one is refused by
    /// [`Publisher::publish`] before anything is sent.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Publishes `message`: a bare message (protobuf), or a [`Request`]
    /// with options: metadata and deadline (pass `ctx.call_options()` from a handler to
    /// forward the caller's), a timeout, and the encoding (`.json()`). Fails with 408
    /// when the deadline passes first (see the module docs).
    ///
    /// An event larger than [`Publisher::max_message_size`] once encoded (with its
    /// topic, headers and envelope) is a bad request (400) naming its size and the
    /// limit, and nothing is sent.
    pub async fn publish(&self, message: impl IntoRequest<M>) -> Result<(), Error> {
        let Request { message, options } = message.into_request();
        let publish_options = PublishOptions::from_call(&options);
        let (content_type, body) = match options.content_type {
            ContentType::Proto => (PROTOBUF, message.encode_to_vec()),
            ContentType::Json => {
                let mut body = Vec::new();
                message
                    .write_json(&mut body)
                    .map_err(|e| Error::bad_request("go.micro.broker", format!("encode: {e}")))?;
                (JSON, body)
            }
        };
        let mut header: std::collections::HashMap<String, String> = options
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        header.insert(HEADER_CONTENT_TYPE.into(), content_type.into());
        header.insert(HEADER_TOPIC.into(), self.topic.clone());
        let id = crate::id::random_uuid();
        header.insert(HEADER_ID.into(), id.clone());
        let span = send_span(&options, &self.topic, &id);
        telemetry::inject_map(&span, &mut header);
        let size = body.len()
            + self.topic.len()
            + header
                .iter()
                .map(|(k, v)| k.len() + v.len() + HEADER_OVERHEAD)
                .sum::<usize>()
            + ENVELOPE_RESERVE;
        if size > self.max_message_size {
            return Err(Error::bad_request(
                "go.micro.broker",
                format!(
                    "event on {} is too large: {size} bytes with its envelope ({} bytes of {content_type}), over the limit of {} bytes",
                    self.topic,
                    body.len(),
                    self.max_message_size
                ),
            ));
        }
        let message = crate::broker::Message { header, body };
        // Connecting and publishing, within the deadline (none: the broker's own bound).
        let publish = async {
            self.broker.connect().await?;
            let options = publish_options.clone();
            self.broker.publish(&self.topic, message, options).await
        };
        let result =
            crate::broker::within(&publish_options, self.broker.name(), &self.topic, publish)
                .instrument(span.clone())
                .await;
        crate::observe::published(self.broker.name(), &self.topic, result.is_ok());
        let result = result.map_err(broker_error);
        if let Err(e) = &result {
            telemetry::record_error(&span, e.grpc_code());
        }
        result
    }
}

/// The producer span of one publish on `topic`: a child of the options' parent,
/// else of the current span.
fn send_span(options: &crate::CallOptions, topic: &str, id: &str) -> tracing::Span {
    macro_rules! span {
        ($($parent:tt)*) => {
            tracing::info_span!(
                target: TARGET,
                $($parent)*
                "send",
                otel.name = format_args!("send {topic}"),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                messaging.system = "micro",
                messaging.operation.type = "send",
                messaging.destination.name = topic,
                messaging.message.id = id,
            )
        };
    }
    match &options.parent {
        Some(parent) => span!(parent: parent,),
        None => span!(),
    }
}

/// The consumer span of one delivery on `topic`: a child of the publisher's span
/// when the message's headers carry its trace context.
fn process_span(topic: &str, header: &std::collections::HashMap<String, String>) -> tracing::Span {
    let id = header
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(HEADER_ID))
        .map(|(_, v)| v.as_str());
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "process",
        otel.name = format_args!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "micro",
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.message.id = id,
    );
    telemetry::set_parent_from_message(&span, header);
    span
}

fn broker_error(e: BrokerError) -> Error {
    match e {
        BrokerError::DeadlineExceeded { .. } => Error::timeout("go.micro.broker", e.to_string()),
        e => Error::internal_server_error("go.micro.broker", e.to_string()),
    }
}

/// Wraps a typed handler as a broker [`Handler`]: decodes each message (protobuf or
/// JSON, by its `Content-Type`) and passes its headers as the context's metadata.
pub(crate) fn typed_handler<M, F, Fut>(handler: F) -> Handler
where
    M: Message,
    F: Fn(Context, M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |event: Event| -> HandlerFuture {
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let header = &event.message.header;
            let content_type = header
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(HEADER_CONTENT_TYPE))
                .map_or(PROTOBUF, |(_, v)| v.as_str());
            let decoded: Result<M, String> = if content_type.contains("json") {
                M::read_json(&mut event.message.body.as_slice()).map_err(|e| e.to_string())
            } else {
                M::decode(event.message.body.as_slice()).map_err(|e| e.to_string())
            };
            let message = decoded.map_err(|e| {
                crate::observe::delivered(&event.topic, false);
                BrokerError::Handler(format!(
                    "message on {} is not a valid {content_type} message: {e}",
                    event.topic
                ))
            })?;
            let metadata: Metadata = header.iter().collect();
            let span = process_span(&event.topic, header);
            let ctx = Context::from_parts(metadata, None, None, Default::default())
                .with_span(span.clone());
            let result = handler(ctx, message).instrument(span.clone()).await;
            crate::observe::delivered(&event.topic, result.is_ok());
            if let Err(e) = &result {
                telemetry::record_error(&span, e.grpc_code());
            }
            result.map_err(|e| BrokerError::Handler(e.to_string()))
        })
    })
}
