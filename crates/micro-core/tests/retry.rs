//! Retries: which errors are retried on another node, and that retrying never
//! outlives the call's deadline.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use micro_core::client::Ejection;
use micro_core::selector::RoundRobin;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Error, Request};
use support::{Msg, PATH, client, handler, msg, registry, start};

#[tokio::test]
async fn unavailable_is_retried_elsewhere_and_invalid_argument_is_not() {
    let registry = registry();
    let busy_calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&busy_calls);
    let busy = start("retry", &registry, move |s| {
        s.handle(handler("Svc", move |_, m: Msg| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if m.text == "bad" {
                    Err(Error::bad_request("retry", "bad input"))
                } else {
                    Err(Error::service_unavailable("retry", "overloaded"))
                }
            }
        }))
        .unwrap()
    })
    .await;
    let good = start("retry", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move {
            if m.text == "bad" {
                Err(Error::bad_request("retry", "bad input"))
            } else {
                Ok(msg("ok"))
            }
        }))
        .unwrap()
    })
    .await;
    // Round robin, so that the calls below reach both nodes for certain; no ejection,
    // so that the busy node stays in the choice (tests/ejection.rs tests ejection).
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .ejection(Ejection::default().consecutive_failures(0))
        .build();
    for _ in 0..20 {
        let reply: Msg = client
            .call("retry", PATH, Request::new(msg("x"), CallOptions::new()))
            .await
            .unwrap();
        assert_eq!(reply.text, "ok");
    }
    let before = busy_calls.load(Ordering::SeqCst);
    assert!(
        before <= 20,
        "the busy node was tried {before} times for 20 calls"
    );
    // INVALID_ARGUMENT is the caller's problem: one attempt, no retry.
    let mut attempts = 0;
    for _ in 0..10 {
        let before = busy_calls.load(Ordering::SeqCst);
        let err = client
            .call::<_, Msg>("retry", PATH, Request::new(msg("bad"), CallOptions::new()))
            .await
            .unwrap_err();
        assert_eq!(err.code, 400);
        attempts += busy_calls.load(Ordering::SeqCst) - before;
    }
    // Every other call starts on the busy node and ends there: 5, not 10 or more.
    assert_eq!(attempts, 5, "an INVALID_ARGUMENT call was retried");
    busy.stop().await.unwrap();
    good.stop().await.unwrap();
}

#[tokio::test]
async fn retries_never_outlive_the_deadline() {
    let registry = registry();
    // A registered node that refuses every connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = micro_core::registry::Service::new("dead").node(micro_core::registry::Node::new(
        "dead-1",
        format!("127.0.0.1:{port}"),
    ));
    registry.register(&dead, Default::default()).await.unwrap();
    let started = Instant::now();
    let err = client(&registry)
        .call::<_, Msg>(
            "dead",
            PATH,
            Request::new(
                msg(""),
                CallOptions::new().timeout(Duration::from_millis(700)),
            ),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800), "{took:?}");
    assert!(err.code == 503 || err.code == 408, "{err}");
}

/// A node that is leaving: it speaks just enough HTTP/2 to take each request's
/// HEADERS and answer GOAWAY(last stream 0, NO_ERROR), as a server does to requests
/// that race its graceful shutdown. Returns its address and the requests it turned away.
async fn going_away_node() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const GOAWAY: u8 = 7;
    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let turned_away = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&turned_away);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = socket.write_all(&frame(SETTINGS, 0, &[])).await;
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match head[3] {
                        SETTINGS if head[4] & 1 == 0 => {
                            let _ = socket.write_all(&frame(SETTINGS, 1, &[])).await;
                        }
                        HEADERS => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            // Last stream id 0, error code NO_ERROR: nothing was processed.
                            let _ = socket.write_all(&frame(GOAWAY, 0, &[0; 8])).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (address, turned_away)
}

#[tokio::test]
async fn a_request_turned_away_by_goaway_is_sent_to_another_node() {
    let registry = registry();
    let (address, turned_away) = going_away_node().await;
    let leaving = micro_core::registry::Service::new("leaving")
        .node(micro_core::registry::Node::new("leaving-1", address));
    registry
        .register(&leaving, Default::default())
        .await
        .unwrap();
    let good = start("leaving", &registry, |s| {
        s.handle(handler("Svc", |_, _: Msg| async move { Ok(msg("ok")) }))
            .unwrap()
    })
    .await;
    // Round robin with ejection off: every other call starts on the leaving node.
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .ejection(Ejection::default().consecutive_failures(0))
        .build();
    for _ in 0..10 {
        let reply: Msg = client
            .call("leaving", PATH, Request::new(msg("x"), CallOptions::new()))
            .await
            .unwrap();
        assert_eq!(reply.text, "ok");
    }
    let turned_away = turned_away.load(Ordering::SeqCst);
    assert!(
        turned_away >= 5,
        "the leaving node saw {turned_away} requests, expected every other call"
    );
    good.stop().await.unwrap();
}
