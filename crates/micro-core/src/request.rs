//! A request as a client method takes it: a message, or a message with per-call
//! options (tonic's `IntoRequest` and `IntoStreamingRequest` are the model).

use futures_util::Stream;

use crate::CallOptions;
use crate::codec::Message;

/// A message with the options of the call that carries it.
///
/// Generated client methods take `impl IntoRequest<M>`: pass the bare message for the
/// client's defaults, or a `Request` for a timeout, metadata, JSON, a node selector,
/// or (from a handler) the caller's deadline and metadata:
///
/// ```
/// use std::time::Duration;
/// use micro_core::{CallOptions, Context, Request};
///
/// let ctx = Context::new();
/// let request = Request::new("spec", ctx.call_options().timeout(Duration::from_secs(2)));
/// assert_eq!(request.message, "spec");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Request<T> {
    /// The message (or, for client and bidirectional streams, the stream of them).
    pub message: T,
    /// How the call is made.
    pub options: CallOptions,
}

impl<T> Request<T> {
    /// `message` sent with `options`.
    pub fn new(message: T, options: CallOptions) -> Self {
        Self { message, options }
    }
}

/// What a unary or server-streaming client method accepts: a bare message (the
/// client's defaults) or a [`Request`] of one.
pub trait IntoRequest<M> {
    /// The message and its options.
    fn into_request(self) -> Request<M>;
}

impl<M: Message> IntoRequest<M> for M {
    fn into_request(self) -> Request<M> {
        Request::new(self, CallOptions::default())
    }
}

impl<M: Message> IntoRequest<M> for Request<M> {
    fn into_request(self) -> Request<M> {
        self
    }
}

/// What a client- or bidirectional-streaming client method accepts: a stream of
/// messages (the client's defaults) or a [`Request`] of one.
pub trait IntoStreamingRequest {
    /// The stream of messages.
    type Stream: Stream<Item = Self::Message> + Send + 'static;
    /// The messages.
    type Message: Message;
    /// The stream and its options.
    fn into_streaming_request(self) -> Request<Self::Stream>;
}

impl<S> IntoStreamingRequest for S
where
    S: Stream + Send + 'static,
    S::Item: Message,
{
    type Stream = S;
    type Message = S::Item;

    fn into_streaming_request(self) -> Request<S> {
        Request::new(self, CallOptions::default())
    }
}

impl<S> IntoStreamingRequest for Request<S>
where
    S: Stream + Send + 'static,
    S::Item: Message,
{
    type Stream = S;
    type Message = S::Item;

    fn into_streaming_request(self) -> Request<S> {
        self
    }
}
