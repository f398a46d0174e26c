//! Transports and codecs for micro.
//!
//! - [`Transport`]: listens for and dials the byte streams that carry gRPC's HTTP/2.
//!   [`TcpTransport`] is the default; [`MemoryTransport`] connects tasks of one process
//!   with no sockets; `TlsTransport` (feature `tls`) adds TLS and mutual TLS.
//! - [`Codec`]: turns messages into bytes and back. [`ProtoCodec`] (Protocol Buffers)
//!   is the default, [`JsonCodec`] serves `application/grpc+json`; [`TonicCodec`] plugs
//!   any codec into tonic.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_transport::TransportError> {
//! use micro_transport::{TcpTransport, Transport};
//!
//! let transport = TcpTransport::default();
//! let listener = transport.listen("127.0.0.1:0").await?;
//! println!("listening on {}", listener.local_addr());
//! # Ok(()) }
//! ```

mod codec;
mod error;
mod memory;
mod tcp;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub use codec::{Codec, CodecDecoder, CodecEncoder, JsonCodec, ProtoCodec, TonicCodec};
pub use error::{CodecError, TransportError};
pub use memory::MemoryTransport;
pub use tcp::{DEFAULT_DIAL_TIMEOUT, TcpTransport};
#[cfg(feature = "tls")]
pub use tls::{TlsOptions, TlsTransport};
pub use transport::{Accepted, BoxedIo, Io, Listener, Transport};
