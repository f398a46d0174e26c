//! Deadlines and cancellation: the deadline and metadata travel with nested calls, an
//! exceeded deadline is 408 and the handler sees it, and a handler sees its caller
//! go away.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::server::Handler;
use micro_core::{CallOptions, Context, Request};
use support::{Msg, client, handler, msg, registry, start};

#[tokio::test]
async fn deadline_and_metadata_travel_with_nested_calls() {
    let registry = registry();
    // What the inner handler saw: time remaining, and the x-user metadata.
    type Seen = Option<(Duration, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = start("inner", &registry, move |s| {
        s.handle(handler("Inner", move |ctx: Context, _| {
            let record = Arc::clone(&record);
            async move {
                let remaining = ctx.remaining().expect("a deadline");
                *record.lock().unwrap() =
                    Some((remaining, ctx.metadata().get("x-user").map(String::from)));
                Ok(msg("inner"))
            }
        }))
        .unwrap()
    })
    .await;
    let downstream = client(&registry);
    let outer = start("outer", &registry, move |s| {
        s.handle(handler("Outer", move |ctx: Context, _| {
            let downstream = downstream.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                downstream
                    .call(
                        "inner",
                        "/test.Inner/Call",
                        Request::new(msg(""), ctx.call_options()),
                    )
                    .await
            }
        }))
        .unwrap()
    })
    .await;
    let reply: Msg = client(&registry)
        .call(
            "outer",
            "/test.Outer/Call",
            Request::new(
                msg(""),
                CallOptions::new()
                    .timeout(Duration::from_secs(2))
                    .metadata("X-User", "alice"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "inner");
    let (remaining, user) = seen.lock().unwrap().clone().unwrap();
    // What was left of the caller's 2 s after the outer handler spent 300 ms: never the
    // client's 30 s default.
    assert!(remaining <= Duration::from_millis(1750), "{remaining:?}");
    assert!(remaining >= Duration::from_millis(1000), "{remaining:?}");
    assert_eq!(user.as_deref(), Some("alice"));
    inner.stop().await.unwrap();
    outer.stop().await.unwrap();
}

/// A handler that sleeps, and reports (through `cancelled`) whether its context saw
/// the call abandoned.
fn sleepy(cancelled: Arc<AtomicUsize>) -> Handler {
    handler("Sleepy", move |ctx: Context, _| {
        let cancelled = Arc::clone(&cancelled);
        async move {
            let watcher = ctx.clone();
            tokio::spawn(async move {
                watcher.cancelled().await;
                cancelled.fetch_add(1, Ordering::SeqCst);
            });
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(msg("late"))
        }
    })
}

#[tokio::test]
async fn deadline_exceeded_is_408_and_the_handler_sees_it() {
    let registry = registry();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let svc = start("sleepy", &registry, move |s| {
        s.handle(sleepy(flag)).unwrap()
    })
    .await;
    let started = Instant::now();
    let err = client(&registry)
        .call::<_, Msg>(
            "sleepy",
            "/test.Sleepy/Call",
            Request::new(
                msg(""),
                CallOptions::new().timeout(Duration::from_millis(200)),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    assert!(started.elapsed() < Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_call_is_seen_as_cancelled_by_the_handler() {
    let registry = registry();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let svc = start("sleepy", &registry, move |s| {
        s.handle(sleepy(flag)).unwrap()
    })
    .await;
    let client = client(&registry);
    let call = tokio::spawn(async move {
        client
            .call::<_, Msg>(
                "sleepy",
                "/test.Sleepy/Call",
                Request::new(msg(""), CallOptions::new()),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    call.abort(); // the caller goes away mid-call
    let deadline = Instant::now() + Duration::from_secs(2);
    while cancelled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the handler never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.stop().await.unwrap();
}
