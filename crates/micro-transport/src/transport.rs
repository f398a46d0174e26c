//! The `Transport` trait: the byte streams that carry gRPC's HTTP/2.

use std::fmt;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::TransportError;

/// A bidirectional byte stream: one connection.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// A boxed connection, as transports hand them out.
pub type BoxedIo = Box<dyn Io>;

/// A connection accepted by a [`Listener`], with the peer's address.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub io: BoxedIo,
    /// The peer's address, as the transport writes it.
    pub remote: String,
}

impl fmt::Debug for dyn Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Io")
    }
}

/// Accepts connections on a bound address.
#[async_trait]
pub trait Listener: Send + fmt::Debug {
    /// The next connection. Errors on one connection (for example a failed handshake)
    /// are the transport's to log and skip; an error here means the listener is broken.
    async fn accept(&mut self) -> Result<Accepted, TransportError>;
    /// The address actually bound, e.g. `0.0.0.0:41234` after binding port 0.
    fn local_addr(&self) -> String;
}

/// Listens for and dials connections: how micro's gRPC traffic moves.
///
/// The shape is go-micro's `transport.Transport` (listen, dial), narrowed to byte
/// streams: HTTP/2 framing is gRPC's, on top.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Binds `address` (`host:port`; port 0 picks a free port).
    async fn listen(&self, address: &str) -> Result<Box<dyn Listener>, TransportError>;
    /// Connects to a peer's `host:port`.
    async fn dial(&self, address: &str) -> Result<BoxedIo, TransportError>;
    /// The transport's name: `tcp`, ...
    fn name(&self) -> &'static str;
}
