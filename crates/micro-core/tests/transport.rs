//! Transports: the memory transport carries calls without sockets.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use micro_core::transport::{MemoryTransport, Transport};
use micro_core::{CallOptions, Client, Request};
use support::{Msg, PATH, handler, msg, registry, start_on};

#[tokio::test]
async fn the_memory_transport_carries_calls_without_sockets() {
    let registry = registry();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let svc = start_on("mem", &registry, Arc::clone(&transport), |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let node = registry.get_service("mem").await.unwrap()[0].nodes[0].clone();
    assert!(node.address.starts_with("memory:"), "{}", node.address);
    assert_eq!(node.metadata["transport"], "memory");
    let client = Client::new(Arc::clone(&registry), transport);
    let reply: Msg = client
        .call(
            "mem",
            PATH,
            Request::new(msg("no sockets"), CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "no sockets");
    svc.stop().await.unwrap();
}
