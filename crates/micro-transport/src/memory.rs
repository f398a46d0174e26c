//! An in-memory transport: connections are `tokio::io::duplex` pairs, for tests that
//! need no sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{Accepted, BoxedIo, Listener, Transport, TransportError};

/// Bytes buffered in each direction of an in-memory connection.
const BUFFER: usize = 64 * 1024;

/// Connections inside one process. Addresses are names (`memory:1`, or any string);
/// listening on `""` or an address ending in `:0` picks a fresh one. Clones share one
/// address space; separate `MemoryTransport::new()`s do not see each other.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_transport::TransportError> {
/// use micro_transport::{MemoryTransport, Transport};
///
/// let transport = MemoryTransport::new();
/// let mut listener = transport.listen("").await?;
/// let address = listener.local_addr();
/// let (dialed, accepted) = tokio::join!(transport.dial(&address), listener.accept());
/// assert!(dialed.is_ok() && accepted.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    listeners: Mutex<HashMap<String, mpsc::Sender<Accepted>>>,
    next: AtomicU64,
}

impl MemoryTransport {
    /// A new, empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Accepted>>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct MemoryListener {
    address: String,
    incoming: mpsc::Receiver<Accepted>,
    transport: MemoryTransport,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.transport.listeners().remove(&self.address);
    }
}

#[async_trait]
impl Listener for MemoryListener {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.incoming.recv().await.ok_or_else(|| {
            TransportError::Accept(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "listener closed",
            ))
        })
    }

    fn local_addr(&self) -> String {
        self.address.clone()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn listen(&self, address: &str) -> Result<Box<dyn Listener>, TransportError> {
        let address = if address.is_empty() || address.ends_with(":0") {
            format!(
                "memory:{}",
                self.inner.next.fetch_add(1, Ordering::Relaxed) + 1
            )
        } else {
            address.to_string()
        };
        let (sender, incoming) = mpsc::channel(128);
        let mut listeners = self.listeners();
        if listeners.contains_key(&address) {
            return Err(TransportError::Listen {
                address,
                source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
            });
        }
        listeners.insert(address.clone(), sender);
        drop(listeners);
        Ok(Box::new(MemoryListener {
            address,
            incoming,
            transport: self.clone(),
        }))
    }

    async fn dial(&self, address: &str) -> Result<BoxedIo, TransportError> {
        let refused = || TransportError::Dial {
            address: address.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no listener"),
        };
        let sender = self.listeners().get(address).cloned().ok_or_else(refused)?;
        let (client, server) = tokio::io::duplex(BUFFER);
        let remote = format!(
            "memory-peer:{}",
            self.inner.next.fetch_add(1, Ordering::Relaxed) + 1
        );
        sender
            .send(Accepted {
                io: Box::new(server),
                remote,
            })
            .await
            .map_err(|_| refused())?;
        Ok(Box::new(client))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_and_closed_listeners_refuse() {
        let transport = MemoryTransport::new();
        let mut listener = transport.listen("svc:0").await.unwrap();
        let address = listener.local_addr();
        let mut client = transport.dial(&address).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(listener);
        assert!(transport.dial(&address).await.is_err());
        assert!(MemoryTransport::new().dial(&address).await.is_err());
    }
}
