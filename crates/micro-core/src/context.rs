//! Request context: metadata and deadline, received by handlers and passed on to calls.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Request metadata (go-micro's `metadata.Metadata`): lower-case keys, string values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata(HashMap<String, String>);

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `key` (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// Sets `key` (stored lower-case, as gRPC headers are).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        self.0
            .insert(key.as_ref().to_ascii_lowercase(), value.into());
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(&key.to_ascii_lowercase())
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the application metadata from gRPC headers: ASCII values, without gRPC's
    /// and HTTP's own headers.
    pub(crate) fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut out = Self::new();
        for (name, value) in headers {
            let key = name.as_str();
            if key.starts_with("grpc-") || matches!(key, "content-type" | "te" | "user-agent") {
                continue;
            }
            if let Ok(value) = value.to_str() {
                out.0.insert(key.to_string(), value.to_string());
            }
        }
        out
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut out = Self::new();
        for (k, v) in iter {
            out.insert(k, v);
        }
        out
    }
}

/// What a handler knows about the call it serves.
///
/// Pass it on when the handler calls another service, so the deadline and metadata
/// travel with the request: `client.method(Request::new(req, ctx.call_options()))`.
#[derive(Clone, Debug, Default)]
pub struct Context {
    metadata: Metadata,
    deadline: Option<Instant>,
    remote: Option<std::sync::Arc<str>>,
    cancelled: CancellationToken,
    span: Option<tracing::Span>,
}

impl Context {
    /// A context with no metadata and no deadline (go's `context.Background()`).
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn from_parts(
        metadata: Metadata,
        deadline: Option<Instant>,
        remote: Option<std::sync::Arc<str>>,
        cancelled: CancellationToken,
    ) -> Self {
        Self {
            metadata,
            deadline,
            remote,
            cancelled,
            span: None,
        }
    }

    /// The same context, in `span` (the call's server span or the message's consumer
    /// span).
    pub(crate) fn with_span(mut self, span: tracing::Span) -> Self {
        self.span = Some(span);
        self
    }

    /// The span of the call being handled (micro's server span, or the `process`
    /// span of a message); [`Span::none`](tracing::Span::none) for a context made
    /// with [`Context::new`]. Calls made with [`Context::call_options`] are its
    /// children.
    pub fn span(&self) -> tracing::Span {
        self.span.clone().unwrap_or_else(tracing::Span::none)
    }

    /// Resolves when the call is abandoned: the caller cancelled it or went away, or
    /// its deadline passed. Work spawned for the call can select on it to stop early.
    pub async fn cancelled(&self) {
        self.cancelled.cancelled().await;
    }

    /// Whether the call was abandoned (see [`Context::cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The peer's address, when the transport knows it.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }

    /// Options for an outgoing call made on behalf of this request: the same metadata,
    /// and the *remaining* deadline (never a fixed timeout).
    pub fn call_options(&self) -> CallOptions {
        CallOptions {
            deadline: self.deadline,
            metadata: self.metadata.clone(),
            parent: self.span.clone(),
            ..CallOptions::default()
        }
    }
}

/// Per-call options.
///
/// ```
/// use std::time::Duration;
/// use micro_core::CallOptions;
///
/// let options = CallOptions::new()
///     .timeout(Duration::from_secs(2))
///     .metadata("x-user", "alice");
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) retries: Option<usize>,
    pub(crate) content_type: ContentType,
    pub(crate) selector: Option<std::sync::Arc<dyn crate::selector::Selector>>,
    pub(crate) node: Option<String>,
    pub(crate) parent: Option<tracing::Span>,
}

/// The encoding of a call's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentType {
    /// Protocol Buffers, `application/grpc` (the default).
    #[default]
    Proto,
    /// JSON, `application/grpc+json`.
    Json,
}

impl CallOptions {
    /// The client's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The span the call's client span is a child of (default: the current span;
    /// [`Context::call_options`] sets the handler's).
    #[must_use]
    pub fn parent(mut self, span: tracing::Span) -> Self {
        self.parent = Some(span);
        self
    }

    /// How long this call may take in all, retries included.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// An absolute deadline; the earlier of this and `timeout` wins.
    #[must_use]
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Adds a metadata pair.
    #[must_use]
    pub fn metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// How many times to retry after a connection failure or UNAVAILABLE.
    #[must_use]
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Sends and receives JSON (`application/grpc+json`) instead of protobuf.
    #[must_use]
    pub fn json(mut self) -> Self {
        self.content_type = ContentType::Json;
        self
    }

    /// Calls only the node with this id (a registry node id, `name-uuid`); the call
    /// fails with 503 when the service has no such node. Retries go to no other node.
    #[must_use]
    pub fn node(mut self, id: impl Into<String>) -> Self {
        self.node = Some(id.into());
        self
    }

    /// The one deadline of a call (or publish) made at `now`: the earlier of its
    /// timeout (the options', else `default`) and the caller's deadline. `None`: no
    /// deadline (a stream, or a publish, without one). Every deadline is computed here.
    pub(crate) fn deadline_at(&self, default: Option<Duration>, now: Instant) -> Option<Instant> {
        let own = self.timeout.or(default).map(|t| now + t);
        match (own, self.deadline) {
            (Some(own), Some(caller)) => Some(own.min(caller)),
            (own, caller) => own.or(caller),
        }
    }

    /// Chooses the node with `selector` for this call.
    #[must_use]
    pub fn selector(mut self, selector: impl crate::selector::Selector) -> Self {
        self.selector = Some(std::sync::Arc::new(selector));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_the_earlier_of_timeout_and_caller() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let none = CallOptions::new();
        assert_eq!(none.deadline_at(None, now), None);
        assert_eq!(none.deadline_at(Some(second), now), Some(now + second));
        let timeout = CallOptions::new().timeout(2 * second);
        assert_eq!(
            timeout.deadline_at(Some(second), now),
            Some(now + 2 * second)
        );
        let caller = CallOptions::new()
            .deadline(now + second)
            .timeout(5 * second);
        assert_eq!(caller.deadline_at(None, now), Some(now + second));
        let late_caller = CallOptions::new().deadline(now + 9 * second);
        assert_eq!(
            late_caller.deadline_at(Some(second), now),
            Some(now + second)
        );
        assert_eq!(late_caller.deadline_at(None, now), Some(now + 9 * second));
    }
}
