//! Bounded connections: a peer that says nothing is dropped after the handshake
//! timeout, an idle connection is told to go away and closed, a silent peer that
//! does not answer PINGs is closed, connections beyond the cap are closed at once,
//! and none of it stops the server from serving the next caller. Loopback only.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_core::registry::Registry;
use micro_core::transport::{Accepted, BoxedIo, Listener, TcpTransport, Transport, TransportError};
use micro_core::{CallOptions, Request};
use support::{Msg, PATH, client, handler, msg, registry, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// Upper bound on any wait here; only a broken server reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

/// How a raw connection ended, or did not.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed it, after sending frames of these types.
    Closed(Vec<u8>),
    /// Still open when we stopped waiting, after frames of these types.
    Open(Vec<u8>),
}

/// Reads frames from `stream` until the server closes it or `wait` passes.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> End {
    let mut kinds = Vec::new();
    let read = tokio::time::timeout(wait, async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            kinds.push(header[3]);
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
        }
    })
    .await;
    match read {
        Ok(()) => End::Closed(kinds),
        Err(_) => End::Open(kinds),
    }
}

/// A connection that has done the HTTP/2 handshake (and got the server's SETTINGS).
async fn handshaken(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut header))
        .await
        .expect("no SETTINGS from the server")
        .expect("closed before SETTINGS");
    assert_eq!(header[3], SETTINGS);
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    stream
}

async fn address(registry: &Arc<dyn Registry>, name: &str) -> String {
    registry.get_service(name).await.unwrap()[0].nodes[0]
        .address
        .clone()
}

async fn call_works(registry: &Arc<dyn Registry>, name: &str) {
    let reply: Msg = client(registry)
        .call(
            name,
            PATH,
            Request::new(msg("still here"), CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "still here");
}

fn echo() -> micro_core::server::Handler {
    handler("Svc", |_, m: Msg| async move { Ok(m) })
}

#[tokio::test]
async fn a_peer_that_sends_nothing_is_dropped_after_the_handshake_timeout() {
    let registry = registry();
    let svc = start("handshake", &registry, |s| {
        s.handshake_timeout(Duration::from_millis(300))
            .handle(echo())
            .unwrap()
    })
    .await;
    let address = address(&registry, "handshake").await;

    let mut silent = TcpStream::connect(&address).await.unwrap();
    let mut partial = TcpStream::connect(&address).await.unwrap();
    partial.write_all(&PREFACE[..10]).await.unwrap();
    let mut polite = handshaken(&address).await;

    // (The server's SETTINGS may come first: it speaks first in HTTP/2.)
    assert!(matches!(
        read_until_closed(&mut silent, PATIENCE).await,
        End::Closed(_)
    ));
    assert!(matches!(
        read_until_closed(&mut partial, PATIENCE).await,
        End::Closed(_)
    ));
    // A peer that sent its preface is not held to the handshake timeout.
    assert!(matches!(
        read_until_closed(&mut polite, Duration::from_millis(600)).await,
        End::Open(_)
    ));
    call_works(&registry, "handshake").await;
    drop(polite);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_told_to_go_away_and_closed() {
    let registry = registry();
    let svc = start("idle", &registry, |s| {
        s.idle_timeout(Duration::from_millis(300))
            .keep_alive(None, Duration::from_millis(300))
            .handle(echo())
            .unwrap()
    })
    .await;
    let address = address(&registry, "idle").await;
    let mut idle = handshaken(&address).await;
    match read_until_closed(&mut idle, PATIENCE).await {
        End::Closed(kinds) => assert!(kinds.contains(&GOAWAY), "no GOAWAY: {kinds:?}"),
        End::Open(kinds) => panic!("idle connection still open after {PATIENCE:?}: {kinds:?}"),
    }
    call_works(&registry, "idle").await;
    svc.stop().await.unwrap();
}

/// TCP, counting the connections its listeners accept.
#[derive(Debug, Default)]
struct CountingTransport {
    tcp: TcpTransport,
    accepted: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct CountingListener {
    inner: Box<dyn Listener>,
    accepted: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Listener for CountingListener {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        let accepted = self.inner.accept().await?;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Ok(accepted)
    }
    fn local_addr(&self) -> String {
        self.inner.local_addr()
    }
}

#[async_trait::async_trait]
impl Transport for CountingTransport {
    async fn listen(&self, address: &str) -> Result<Box<dyn Listener>, TransportError> {
        Ok(Box::new(CountingListener {
            inner: self.tcp.listen(address).await?,
            accepted: Arc::clone(&self.accepted),
        }))
    }
    async fn dial(&self, address: &str) -> Result<BoxedIo, TransportError> {
        self.tcp.dial(address).await
    }
    fn name(&self) -> &'static str {
        "counting"
    }
}

#[tokio::test]
async fn a_connection_busy_with_a_call_is_not_idle() {
    let registry = registry();
    let transport = Arc::new(CountingTransport::default());
    let svc = support::start_on("busy", &registry, transport.clone(), |s| {
        s.idle_timeout(Duration::from_millis(200))
            .handle(handler("Svc", |_, m: Msg| async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok(m)
            }))
            .unwrap()
    })
    .await;
    // Calls four times the idle timeout long, one after the other on one pooled
    // connection: had it been taken for idle during the first, the second would have
    // needed a new one.
    let client = client(&registry);
    for _ in 0..2 {
        let _: Msg = client
            .call("busy", PATH, Request::new(msg(""), CallOptions::new()))
            .await
            .unwrap();
    }
    assert_eq!(transport.accepted.load(Ordering::SeqCst), 1);
    // Then, with no call, it is closed: the next call needs a new connection.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _: Msg = client
        .call("busy", PATH, Request::new(msg(""), CallOptions::new()))
        .await
        .unwrap();
    assert_eq!(transport.accepted.load(Ordering::SeqCst), 2);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn a_peer_that_does_not_answer_pings_is_closed() {
    let registry = registry();
    let svc = start("keepalive", &registry, |s| {
        s.idle_timeout(None)
            .keep_alive(Duration::from_millis(200), Duration::from_millis(200))
            .handle(echo())
            .unwrap()
    })
    .await;
    let address = address(&registry, "keepalive").await;
    let mut deaf = handshaken(&address).await;
    match read_until_closed(&mut deaf, PATIENCE).await {
        End::Closed(kinds) => assert!(kinds.contains(&PING), "no PING: {kinds:?}"),
        End::Open(kinds) => panic!("deaf peer still connected after {PATIENCE:?}: {kinds:?}"),
    }
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    const CAP: usize = 5;
    let registry = registry();
    let svc = start("capped", &registry, |s| {
        s.max_connections(CAP).handle(echo()).unwrap()
    })
    .await;
    let address = address(&registry, "capped").await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(handshaken(&address).await);
    }
    // Accepted, then closed without a word.
    let mut extra = TcpStream::connect(&address).await.unwrap();
    let _ = extra.write_all(PREFACE).await;
    assert_eq!(
        read_until_closed(&mut extra, PATIENCE).await,
        End::Closed(vec![])
    );
    for stream in &mut open {
        assert!(matches!(
            read_until_closed(stream, Duration::from_millis(100)).await,
            End::Open(_)
        ));
    }
    // One closes: there is room for one more.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        let mut header = [0u8; 9];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut header)).await
        {
            assert_eq!(header[3], SETTINGS);
            open.push(stream);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never room again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Peers that do not answer the GOAWAY would hold the stop to the grace period.)
    drop(open);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_thousand_idle_connections_are_closed_the_next_call_works() {
    const PEERS: usize = 1000;
    let registry = registry();
    let svc = start("crowded", &registry, |s| {
        s.max_connections(300)
            .handshake_timeout(Duration::from_millis(500))
            .handle(echo())
            .unwrap()
    })
    .await;
    let address = address(&registry, "crowded").await;
    let mut peers = Vec::with_capacity(PEERS);
    for _ in 0..PEERS {
        peers.push(TcpStream::connect(&address).await.unwrap());
    }
    // Every one is closed: beyond the cap at once, the others at the handshake timeout.
    let closed = futures::future::join_all(
        peers
            .iter_mut()
            .map(|peer| read_until_closed(peer, Duration::from_secs(20))),
    )
    .await;
    let still_open = closed
        .iter()
        .filter(|end| matches!(end, End::Open(_)))
        .count();
    assert_eq!(
        still_open, 0,
        "{still_open} of {PEERS} idle connections still open"
    );
    call_works(&registry, "crowded").await;
    svc.stop().await.unwrap();
}
