//! The registry cache over a backend that counts, delays and fails on demand.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use micro_registry::{
    CachedRegistry, Error, MemoryRegistry, Node, RegisterOptions, Registry, Service, WatchOptions,
    Watcher,
};

#[derive(Debug, Default)]
struct Backend {
    memory: MemoryRegistry,
    queries: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait]
impl Registry for Backend {
    async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), Error> {
        self.memory.register(s, o).await
    }
    async fn deregister(&self, s: &Service) -> Result<(), Error> {
        self.memory.deregister(s).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                registry: "test",
                message: "down".into(),
            });
        }
        self.memory.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.memory.list_services().await
    }
    async fn watch(&self, o: WatchOptions) -> Result<Watcher, Error> {
        self.memory.watch(o).await
    }
    fn name(&self) -> &'static str {
        "test"
    }
}

fn svc(id: &str) -> Service {
    Service::new("s")
        .version("1")
        .node(Node::new(id, "10.0.0.1:1"))
}

#[tokio::test]
async fn concurrent_misses_make_one_backend_query_then_memory_answers() {
    let backend = Arc::new(Backend::default());
    backend
        .register(&svc("s-1"), RegisterOptions::default())
        .await
        .unwrap();
    let cache = CachedRegistry::new(backend.clone());
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup("s").await })
        })
        .collect();
    for lookup in lookups {
        assert_eq!(lookup.await.unwrap().unwrap()[0].nodes.len(), 1);
    }
    assert_eq!(backend.queries.load(Ordering::SeqCst), 1);
    for _ in 0..1000 {
        cache.lookup("s").await.unwrap();
    }
    assert_eq!(backend.queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_watch_keeps_cached_nodes_current() {
    let backend = Arc::new(Backend::default());
    backend
        .register(&svc("s-1"), RegisterOptions::default())
        .await
        .unwrap();
    let cache = CachedRegistry::new(backend.clone());
    cache.lookup("s").await.unwrap();
    backend
        .register(&svc("s-2"), RegisterOptions::default())
        .await
        .unwrap();
    backend.deregister(&svc("s-1")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids = cache.cached("s").unwrap()[0]
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .collect();
        if ids == ["s-2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ids, ["s-2"]);
    backend.deregister(&svc("s-2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cache.lookup("s").await.unwrap_err().is_not_found());
    assert_eq!(backend.queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_backend_serves_the_last_known_nodes() {
    // Process-wide counters: other tests may add to them, never take away.
    let before = micro_registry::cache_stats();
    let backend = Arc::new(Backend::default());
    backend
        .register(&svc("s-1"), RegisterOptions::default())
        .await
        .unwrap();
    let cache = CachedRegistry::new(backend.clone()).ttl(Duration::from_millis(10));
    cache.lookup("s").await.unwrap();
    backend.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await; // past the TTL: re-read, which fails
    let stale = cache.lookup("s").await.unwrap();
    assert_eq!(stale[0].nodes[0].id, "s-1");
    assert_eq!(backend.queries.load(Ordering::SeqCst), 2);
    // A service never seen has nothing stale to serve.
    assert!(matches!(
        cache.lookup("other").await,
        Err(Error::Backend { .. })
    ));
    // Three reads, two failed, one of which was answered from the cache.
    let after = micro_registry::cache_stats();
    assert!(after.queries >= before.queries + 3, "{before:?} {after:?}");
    assert!(after.errors >= before.errors + 2, "{before:?} {after:?}");
    assert!(
        after.stale_served > before.stale_served,
        "{before:?} {after:?}"
    );
}
