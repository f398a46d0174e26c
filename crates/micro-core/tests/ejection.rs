//! Node ejection and the retry budget: dead nodes are dropped from the choice at
//! once, failing nodes after a few failures in a row, both probed back; calls with
//! nowhere to go fail at once; retries stay within the budget.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_core::client::{Ejection, RetryBudget};
use micro_core::registry::{Node, Registry, Service};
use micro_core::selector::{RoundRobin, Selector};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Error, Request};
use support::{CountingTransport, Msg, PATH, handler, msg, refusing_address, registry, start};

async fn register_dead(registry: &Arc<dyn Registry>, name: &str, id: &str) -> String {
    let address = refusing_address();
    let dead = Service::new(name).node(Node::new(id, address.clone()));
    registry.register(&dead, Default::default()).await.unwrap();
    address
}

#[tokio::test]
async fn when_the_only_node_is_dead_calls_fail_at_once_naming_it() {
    let registry = registry();
    let dead = register_dead(&registry, "lonely", "lonely-1").await;
    let transport = Arc::new(CountingTransport::default());
    let client = Client::new(Arc::clone(&registry), transport.clone());
    for _ in 0..10 {
        let err = client
            .call::<_, Msg>("lonely", PATH, msg(""))
            .await
            .unwrap_err();
        assert_eq!(err.code, 503, "{err}");
        assert!(err.detail.contains("lonely-1"), "{err}");
    }
    // The first call found it refusing; the others did not dial it again (nor back
    // off against it: there is nowhere else to go).
    assert_eq!(transport.dials(&dead), 1);
}

#[tokio::test]
async fn an_ejected_node_is_probed_back_when_its_penalty_ends() {
    let registry = registry();
    let dead = register_dead(&registry, "probe", "probe-1").await;
    let transport = Arc::new(CountingTransport::default());
    let client = Client::builder(Arc::clone(&registry), transport.clone())
        .ejection(Ejection::default().base_penalty(Duration::from_millis(200)))
        .build();
    let call = || client.call::<_, Msg>("probe", PATH, msg(""));
    assert!(call().await.is_err());
    assert!(call().await.is_err());
    assert_eq!(transport.dials(&dead), 1);
    // The penalty ends: the next call probes (refused again: twice as long now).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(call().await.is_err());
    assert_eq!(transport.dials(&dead), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(call().await.is_err());
    assert_eq!(transport.dials(&dead), 2, "the second penalty is 400 ms");
    // A node that comes back at that address is called again after its penalty.
    let svc = start_at(&registry, "probe", &dead).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply: Msg = call().await.unwrap();
    assert_eq!(reply.text, "back");
    svc.stop().await.unwrap();
}

/// A service `name` answering "back", listening on `address`.
async fn start_at(registry: &Arc<dyn Registry>, name: &str, address: &str) -> support::Running {
    let address = address.to_string();
    start(name, registry, move |s| {
        s.address(address)
            .handle(handler("Svc", |_, _| async move { Ok(msg("back")) }))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_node_failing_in_a_row_is_ejected_and_the_others_take_its_calls() {
    let registry = registry();
    let busy_calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&busy_calls);
    let busy = start("eject", &registry, move |s| {
        s.handle(handler("Svc", move |_, _| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Err::<Msg, _>(Error::service_unavailable("eject", "overloaded"))
            }
        }))
        .unwrap()
    })
    .await;
    let good = start("eject", &registry, |s| {
        s.handle(handler("Svc", |_, _| async move { Ok(msg("ok")) }))
            .unwrap()
    })
    .await;
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    for _ in 0..40 {
        let reply: Msg = client.call("eject", PATH, msg("")).await.unwrap();
        assert_eq!(reply.text, "ok");
    }
    // Five failures in a row ejected it (Envoy's default); without ejection round
    // robin would have sent it 20 of the 40.
    assert_eq!(busy_calls.load(Ordering::SeqCst), 5);
    busy.stop().await.unwrap();
    good.stop().await.unwrap();
}

/// Picks the node whose id starts with "dead" when there is one.
#[derive(Debug)]
struct DeadFirst;

impl Selector for DeadFirst {
    fn select(&self, _service: &str, nodes: &[&Node]) -> usize {
        nodes
            .iter()
            .position(|n| n.id.starts_with("dead"))
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn retries_stay_within_the_budget() {
    let registry = registry();
    register_dead(&registry, "budget", "dead-1").await;
    let good = start("budget", &registry, |s| {
        s.handle(handler("Svc", |_, _| async move { Ok(msg("ok")) }))
            .unwrap()
    })
    .await;
    let first_dead = || Request::new(msg(""), CallOptions::new().selector(DeadFirst));
    // With the default budget, the refused call is retried on the live node.
    let client = Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default()));
    let reply: Msg = client.call("budget", PATH, first_dead()).await.unwrap();
    assert_eq!(reply.text, "ok");
    // With no budget at all, it is not.
    let stingy = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .retry_budget(RetryBudget::default().percent(0.0).min_per_second(0))
        .build();
    let err = stingy
        .call::<_, Msg>("budget", PATH, first_dead())
        .await
        .unwrap_err();
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains("dead-1"), "{err}");
    good.stop().await.unwrap();
}
