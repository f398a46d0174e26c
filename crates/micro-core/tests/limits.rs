//! Size limits: a message over the server's limit is refused as resource exhausted
//! and never reaches the handler.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use micro_core::{CallOptions, Request};
use support::{Msg, PATH, client, handler, msg, registry, start};

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_never_handled() {
    let registry = registry();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let svc = start("small", &registry, move |s| {
        s.max_message_size(1024)
            .handle(handler("Svc", move |_, m: Msg| {
                let count = Arc::clone(&count);
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(m)
                }
            }))
            .unwrap()
    })
    .await;
    let client = client(&registry);
    let ok: Msg = client
        .call(
            "small",
            PATH,
            Request::new(msg(&"x".repeat(500)), CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(ok.text.len(), 500);
    let err = client
        .call::<_, Msg>(
            "small",
            PATH,
            Request::new(msg(&"x".repeat(4096)), CallOptions::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 429, "{err}");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}
