//! Message streams for streaming RPCs: what handlers send into and callers read from.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::Error;

/// How many messages a handler may send ahead of what the peer has taken.
pub(crate) const STREAM_BUFFER: usize = 16;

/// Sends the messages of a stream to the peer.
///
/// Sending waits while the peer is slow (back-pressure, at most 16 messages ahead),
/// and fails once the peer has gone away: then stop producing.
pub struct Sender<T> {
    tx: mpsc::Sender<Result<T, tonic::Status>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> Sender<T> {
    pub(crate) fn new(tx: mpsc::Sender<Result<T, tonic::Status>>) -> Self {
        Self { tx }
    }

    /// Sends one message.
    pub async fn send(&self, message: T) -> Result<(), Error> {
        self.tx
            .send(Ok(message))
            .await
            .map_err(|_| Error::new("go.micro.server", "stream closed: the peer went away", 499))
    }

    /// Whether the peer has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

type Inner<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>;

/// Told once how a stream ended: OK at its end, the error's code, CANCELLED when
/// the receiver is dropped before the end.
type OnEnd = Box<dyn FnOnce(tonic::Code) + Send>;

/// Receives the messages of a stream from the peer: use [`Receiver::recv`], or use it
/// as a [`Stream`].
pub struct Receiver<T> {
    inner: Inner<T>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    on_end: Option<OnEnd>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("done", &self.done)
            .finish()
    }
}

impl<T> Receiver<T> {
    pub(crate) fn new(
        stream: impl Stream<Item = Result<T, Error>> + Send + 'static,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            inner: Box::pin(stream),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            done: false,
            on_end: None,
        }
    }

    /// Calls `f` once with how the stream ended (the client closes its call's span
    /// and records its duration there, so both cover the whole stream).
    /// A second `f` runs after the first.
    pub(crate) fn on_end(mut self, f: impl FnOnce(tonic::Code) + Send + 'static) -> Self {
        self.on_end = Some(match self.on_end.take() {
            Some(first) => Box::new(move |code| {
                first(code);
                f(code);
            }),
            None => Box::new(f),
        });
        self
    }

    fn end(&mut self, code: tonic::Code) {
        self.done = true;
        if let Some(f) = self.on_end.take() {
            f(code);
        }
    }

    /// The next message; `None` once the stream has ended. An error ends it too.
    pub async fn recv(&mut self) -> Option<Result<T, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Stream for Receiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                self.end(tonic::Code::DeadlineExceeded);
                return Poll::Ready(Some(Err(Error::timeout(
                    "go.micro.client",
                    "stream deadline exceeded",
                ))));
            }
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.end(e.grpc_code());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.end(tonic::Code::Ok);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Dropped before its end: the caller gave up on it.
        self.end(tonic::Code::Cancelled);
    }
}
