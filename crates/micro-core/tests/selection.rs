//! Node selection: round robin spreads calls evenly over a service's nodes.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use micro_core::selector::RoundRobin;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Request};
use support::{Msg, PATH, handler, msg, registry, start};

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let registry = registry();
    let mut nodes = Vec::new();
    for tag in ["a", "b", "c"] {
        nodes.push(
            start("rr", &registry, move |s| {
                s.handle(handler("Svc", move |_, _| async move { Ok(msg(tag)) }))
                    .unwrap()
            })
            .await,
        );
    }
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let reply: Msg = client
            .call("rr", PATH, Request::new(msg(""), CallOptions::new()))
            .await
            .unwrap();
        *counts.entry(reply.text).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}
