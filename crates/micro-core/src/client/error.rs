//! How a failed attempt is read: the layer error type, a status as the caller sees
//! it, and whether the request never left.

use crate::Error;
use crate::codec::BoxError;

/// An error from a client layer or the connection. A concrete type rather than a
/// boxed trait object, which here trips a compiler limitation (rust-lang/rust#102211).
#[derive(Debug)]
pub struct LayerError(pub BoxError);

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// A status from an attempt as the caller sees it.
pub(super) fn client_error(status: tonic::Status) -> Error {
    // tonic reports a message over the size limit as OUT_OF_RANGE; gRPC says
    // RESOURCE_EXHAUSTED.
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        return Error::new("go.micro.client", status.message(), 429);
    }
    Error::from(status)
}

/// Whether the call never reached a handler: the connection could not be made.
pub(super) fn is_connection_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown {
        return false;
    }
    // tonic reports connect errors with the transport's error as a source.
    let mut source = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<micro_transport::TransportError>()
            .is_some()
            || e.downcast_ref::<tonic::transport::Error>().is_some()
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the node turned the request away unprocessed: its GOAWAY named a last
/// stream below this one, so no handler saw it. A node that is shutting down does
/// this to requests racing its GOAWAY; like a refused connection, it is safe to send
/// the request to another node (gRPC's "transparent retry").
pub(super) fn is_refused_by_go_away(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote();
        }
        source = e.source();
    }
    false
}

/// Whether the request was handed back unsent: hyper cancels a request that was
/// still queued for a connection when the connection closed (or was not ready), and
/// returns it unwritten, so no node saw it. A node closing its connections as it
/// shuts down does this to a request that raced the close; like a refused connection,
/// it is safe to send the request to another node.
pub(super) fn is_unsent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            return hyper.is_canceled();
        }
        source = e.source();
    }
    false
}

/// A call with JSON whose messages have no JSON form: refused before anything is sent.
pub(super) fn no_json_form() -> Error {
    Error::bad_request(
        "go.micro.client",
        "JSON needs messages with a JSON form (generated with serde: micro_codegen::Builder::serde(true))",
    )
}
