//! TCP, the default transport.

use std::time::Duration;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};

use crate::{Accepted, BoxedIo, Listener, Transport, TransportError};

/// How long a dial may take by default (go-micro's `DefaultDialTimeout`).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Plain TCP with `TCP_NODELAY` (gRPC writes small frames and waits for answers).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_transport::TransportError> {
/// use micro_transport::{TcpTransport, Transport};
///
/// let transport = TcpTransport::default();
/// let mut listener = transport.listen("127.0.0.1:0").await?;
/// let address = listener.local_addr();
/// let (dialed, accepted) = tokio::join!(transport.dial(&address), listener.accept());
/// assert!(dialed.is_ok() && accepted.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TcpTransport {
    dial_timeout: Duration,
}

impl Default for TcpTransport {
    fn default() -> Self {
        Self {
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
        }
    }
}

impl TcpTransport {
    /// Sets the dial timeout.
    #[must_use]
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }
}

#[derive(Debug)]
struct TcpAcceptor {
    listener: TcpListener,
    local: String,
}

#[async_trait]
impl Listener for TcpAcceptor {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set TCP_NODELAY");
                    }
                    return Ok(Accepted {
                        io: Box::new(stream),
                        remote: peer.to_string(),
                    });
                }
                // Errors that concern one connection (reset before accept, out of file
                // descriptors for a moment) must not stop the server.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(TransportError::Accept(e)),
            }
        }
    }

    fn local_addr(&self) -> String {
        self.local.clone()
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

#[async_trait]
impl Transport for TcpTransport {
    async fn listen(&self, address: &str) -> Result<Box<dyn Listener>, TransportError> {
        let listener =
            TcpListener::bind(address)
                .await
                .map_err(|source| TransportError::Listen {
                    address: address.to_string(),
                    source,
                })?;
        let local = listener
            .local_addr()
            .map_err(|source| TransportError::Listen {
                address: address.to_string(),
                source,
            })?
            .to_string();
        Ok(Box::new(TcpAcceptor { listener, local }))
    }

    async fn dial(&self, address: &str) -> Result<BoxedIo, TransportError> {
        let stream = tokio::time::timeout(self.dial_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| TransportError::DialTimeout {
                address: address.to_string(),
                timeout: self.dial_timeout,
            })?
            .map_err(|source| TransportError::Dial {
                address: address.to_string(),
                source,
            })?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%address, error = %e, "set TCP_NODELAY");
        }
        Ok(Box::new(stream))
    }

    fn name(&self) -> &'static str {
        "tcp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_a_real_socket() {
        let transport = TcpTransport::default();
        let mut listener = transport.listen("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr();
        assert!(address.starts_with("127.0.0.1:") && !address.ends_with(":0"));
        let server = tokio::spawn(async move {
            let mut conn = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            conn.io.read_exact(&mut buf).await.unwrap();
            conn.io.write_all(&buf).await.unwrap();
        });
        let mut io = transport.dial(&address).await.unwrap();
        io.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        io.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn dialing_a_closed_port_fails_clearly() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = TcpTransport::default()
            .dial(&format!("127.0.0.1:{port}"))
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(&format!("dial 127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn listening_on_a_bad_address_fails_clearly() {
        let err = TcpTransport::default()
            .listen("not an address")
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("listen on not an address"),
            "{err}"
        );
    }
}
