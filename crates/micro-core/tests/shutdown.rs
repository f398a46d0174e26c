//! Shutdown: a service leaves the registry before it stops listening and lets calls in
//! flight finish, and clients close their connections to nodes that left.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::registry::{MemoryRegistry, Registry, WatchOptions};
use micro_core::selector::RoundRobin;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Request};
use support::{Msg, PATH, client, handler, msg, registry, start};

/// A memory registry that, when asked to deregister a node, first checks whether
/// the node still accepts connections.
#[derive(Debug, Default)]
struct ProbingRegistry {
    memory: MemoryRegistry,
    listening_at_deregister: Mutex<Option<bool>>,
}

#[async_trait::async_trait]
impl Registry for ProbingRegistry {
    async fn register(
        &self,
        s: &micro_core::registry::Service,
        o: micro_core::registry::RegisterOptions,
    ) -> Result<(), micro_core::registry::Error> {
        self.memory.register(s, o).await
    }
    async fn deregister(
        &self,
        s: &micro_core::registry::Service,
    ) -> Result<(), micro_core::registry::Error> {
        let open = tokio::net::TcpStream::connect(&s.nodes[0].address)
            .await
            .is_ok();
        *self.listening_at_deregister.lock().unwrap() = Some(open);
        self.memory.deregister(s).await
    }
    async fn get_service(
        &self,
        n: &str,
    ) -> Result<Vec<micro_core::registry::Service>, micro_core::registry::Error> {
        self.memory.get_service(n).await
    }
    async fn list_services(
        &self,
    ) -> Result<Vec<micro_core::registry::Service>, micro_core::registry::Error> {
        self.memory.list_services().await
    }
    async fn watch(
        &self,
        o: WatchOptions,
    ) -> Result<micro_core::registry::Watcher, micro_core::registry::Error> {
        self.memory.watch(o).await
    }
    fn name(&self) -> &'static str {
        "probing"
    }
}

#[tokio::test]
async fn shutdown_deregisters_first_and_lets_in_flight_calls_finish() {
    let probing = Arc::new(ProbingRegistry::default());
    let registry: Arc<dyn Registry> = probing.clone();
    let svc = start("graceful", &registry, |s| {
        s.handle(handler("Svc", |_, _| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(msg("finished"))
        }))
        .unwrap()
    })
    .await;
    let address = registry.get_service("graceful").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let client = client(&registry);
    let in_flight = tokio::spawn(async move {
        client
            .call::<_, Msg>("graceful", PATH, Request::new(msg(""), CallOptions::new()))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.stop().await.unwrap();

    // The node left the registry while its listener was still open...
    assert_eq!(*probing.listening_at_deregister.lock().unwrap(), Some(true));
    assert!(
        registry
            .get_service("graceful")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // ...the call in flight finished...
    assert_eq!(in_flight.await.unwrap().unwrap().text, "finished");
    // ...and then the listener closed.
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn connections_to_nodes_that_leave_are_closed() {
    let registry = registry();
    let a = start("pool", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let b = start("pool", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    for _ in 0..4 {
        let _: Msg = client
            .call("pool", PATH, Request::new(msg(""), CallOptions::new()))
            .await
            .unwrap();
    }
    assert_eq!(client.connections(), 2);
    a.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while client.connections() != 1 {
        assert!(
            Instant::now() < deadline,
            "still {} connections",
            client.connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.stop().await.unwrap();
}
