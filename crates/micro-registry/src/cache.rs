//! A caching layer over any registry, as go-micro's `registry/cache`.
//!
//! Lookups are answered from memory; the cache is kept current by one watch of the
//! whole registry, and entries are re-read after a TTL as a safety net. Concurrent
//! lookups of a service that is not cached cause one backend query (the others wait
//! for its answer). When the backend fails, the last known nodes are served, and that
//! is logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    Action, Error, Event, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
};

/// How long a cached service is trusted without a re-read (go-micro's `DefaultTTL`).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

type Lookup = Result<Arc<Vec<Service>>, Error>;

/// Reads of the registries behind every cache in the process.
static QUERIES: AtomicU64 = AtomicU64::new(0);
/// Those reads that failed (not counting a service that is not registered).
static ERRORS: AtomicU64 = AtomicU64::new(0);
/// Failed reads answered with the last known nodes.
static STALE_SERVED: AtomicU64 = AtomicU64::new(0);

/// What every [`CachedRegistry`] in the process asked of its registry, since start.
/// micro-core's metrics read it at each scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads of the registry (cache misses and re-reads).
    pub queries: u64,
    /// Reads that failed (a service that is not registered is not a failure).
    pub errors: u64,
    /// Failed reads answered with the nodes last known.
    pub stale_served: u64,
}

/// The counters of every [`CachedRegistry`] in the process.
///
/// ```
/// let stats = micro_registry::cache_stats();
/// assert!(stats.errors <= stats.queries);
/// ```
pub fn cache_stats() -> CacheStats {
    CacheStats {
        queries: QUERIES.load(Ordering::Relaxed),
        errors: ERRORS.load(Ordering::Relaxed),
        stale_served: STALE_SERVED.load(Ordering::Relaxed),
    }
}

/// A [`Registry`] that caches `get_service`; everything else goes to the inner registry.
///
/// `CachedRegistry::new(registry)` trusts a cached service for [`DEFAULT_CACHE_TTL`];
/// `CachedRegistry::new(registry).ttl(ttl)` for `ttl`. Nothing starts until the first
/// lookup.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_registry::Error> {
/// use std::sync::Arc;
/// use micro_registry::{CachedRegistry, MemoryRegistry, Node, Registry, Service};
///
/// let backend = Arc::new(MemoryRegistry::new());
/// let cache = CachedRegistry::new(backend.clone());
/// let svc = Service::new("greeter").node(Node::new("greeter-1", "10.0.0.1:9000"));
/// backend.register(&svc, Default::default()).await?;
/// assert_eq!(cache.get_service("greeter").await?[0].nodes.len(), 1); // fetched once
/// assert!(cache.cached("greeter").is_some());                          // then from memory
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CachedRegistry {
    inner: Arc<Inner>,
    /// How long a cached service is trusted. Per handle: clones share the entries
    /// and the watch, which do not depend on it.
    ttl: Duration,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn Registry>,
    entries: RwLock<foldhash::HashMap<String, Entry>>,
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Lookup>>>>,
    watching: Mutex<bool>,
}

#[derive(Debug, Clone)]
struct Entry {
    services: Arc<Vec<Service>>,
    fetched: Instant,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CachedRegistry {
    /// Caches `registry`, re-reading a service after [`DEFAULT_CACHE_TTL`].
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                entries: RwLock::new(foldhash::HashMap::default()),
                inflight: Mutex::new(HashMap::new()),
                watching: Mutex::new(false),
            }),
            ttl: DEFAULT_CACHE_TTL,
        }
    }

    /// Sets how long a cached service is trusted before it is re-read.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The registry underneath.
    pub fn inner(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The cached versions of `name`, if any are cached and fresh: no I/O, no await.
    pub fn cached(&self, name: &str) -> Option<Arc<Vec<Service>>> {
        let entries = read(&self.inner.entries);
        let entry = entries.get(name)?;
        (entry.fetched.elapsed() < self.ttl).then(|| Arc::clone(&entry.services))
    }

    /// Like [`Registry::get_service`], sharing the cached `Arc`.
    pub async fn lookup(&self, name: &str) -> Result<Arc<Vec<Service>>, Error> {
        if let Some(services) = self.cached(name) {
            return if services.is_empty() {
                Err(Error::NotFound(name.to_string()))
            } else {
                Ok(services)
            };
        }
        self.ensure_watching().await;
        // One query per name at a time: later callers wait for the first one's answer.
        let (mut receiver, sender) = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(name) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(name.to_string(), rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(sender) = sender {
            let result = self.fetch(name).await;
            lock(&self.inner.inflight).remove(name);
            let _ = sender.send(Some(result.clone()));
            return result;
        }
        let answered: Option<Lookup> = match receiver.wait_for(Option::is_some).await {
            Ok(result) => result.clone(),
            Err(_) => None,
        };
        match answered {
            Some(result) => result,
            // The querying task was dropped mid-flight; ask ourselves.
            None => self.fetch(name).await,
        }
    }

    async fn fetch(&self, name: &str) -> Lookup {
        QUERIES.fetch_add(1, Ordering::Relaxed);
        match self.inner.registry.get_service(name).await {
            Ok(services) => {
                let services = Arc::new(services);
                write(&self.inner.entries).insert(
                    name.to_string(),
                    Entry {
                        services: Arc::clone(&services),
                        fetched: Instant::now(),
                    },
                );
                Ok(services)
            }
            Err(Error::NotFound(n)) => {
                write(&self.inner.entries).remove(name);
                Err(Error::NotFound(n))
            }
            Err(e) => {
                ERRORS.fetch_add(1, Ordering::Relaxed);
                // Serve what we last knew rather than nothing.
                let stale = read(&self.inner.entries)
                    .get(name)
                    .map(|entry| Arc::clone(&entry.services));
                match stale {
                    Some(services) if !services.is_empty() => {
                        STALE_SERVED.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(service = name, error = %e, "registry failed; serving cached nodes");
                        Ok(services)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Starts the watch that keeps cached entries current, once. The first caller
    /// waits until the watch is in place, so no change after its lookup is missed.
    async fn ensure_watching(&self) {
        {
            let mut watching = lock(&self.inner.watching);
            if *watching {
                return;
            }
            *watching = true;
        }
        let first = self.inner.registry.watch(WatchOptions::default()).await;
        // The task holds the cache (and so the registry) only weakly: dropping the
        // cache drops the registry, which ends the watch and this task.
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut next = first;
            let mut backoff = Duration::from_millis(10);
            loop {
                match next {
                    Ok(watcher) => {
                        backoff = Duration::from_millis(10);
                        if !follow(watcher, &weak).await {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "registry watch failed; retrying"),
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 10).min(Duration::from_secs(10));
                let Some(registry) = weak.upgrade().map(|inner| Arc::clone(&inner.registry)) else {
                    return;
                };
                next = registry.watch(WatchOptions::default()).await;
            }
        });
    }
}

/// Applies watch events until the watcher ends (true: watch again) or the cache is
/// gone (false).
async fn follow(mut watcher: Watcher, weak: &Weak<Inner>) -> bool {
    loop {
        let next = watcher.next().await;
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        match next {
            Ok(event) => apply(&inner, event),
            Err(Error::Lagged(n)) => {
                // Events were lost: forget everything, so the next lookups re-read.
                tracing::warn!(dropped = n, "registry watch lagged; clearing the cache");
                write(&inner.entries).clear();
            }
            Err(e) => {
                tracing::debug!(error = %e, "registry watch ended");
                write(&inner.entries).clear();
                return true;
            }
        }
    }
}

fn apply(inner: &Inner, event: Event) {
    let mut entries = write(&inner.entries);
    // Only services someone looked up are cached.
    let Some(entry) = entries.get_mut(&event.service.name) else {
        return;
    };
    let mut services: Vec<Service> = entry.services.as_ref().clone();
    let version = event.service.version.clone();
    match event.action {
        Action::Create | Action::Update => {
            match services.iter_mut().find(|s| s.version == version) {
                Some(existing) => {
                    for node in &event.service.nodes {
                        existing.nodes.retain(|n| n.id != node.id);
                        existing.nodes.push(node.clone());
                    }
                    if !event.service.endpoints.is_empty() {
                        existing.endpoints.clone_from(&event.service.endpoints);
                    }
                }
                None => services.push(event.service.clone()),
            }
        }
        Action::Delete => {
            for existing in services.iter_mut().filter(|s| s.version == version) {
                existing
                    .nodes
                    .retain(|n| event.service.nodes.iter().all(|gone| gone.id != n.id));
            }
            services.retain(|s| !s.nodes.is_empty());
        }
    }
    entry.services = Arc::new(services);
}

#[async_trait]
impl Registry for CachedRegistry {
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        self.inner.registry.register(service, options).await
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        self.inner.registry.deregister(service).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.lookup(name).await.map(|s| s.as_ref().clone())
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.inner.registry.list_services().await
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.inner.registry.watch(options).await
    }

    fn name(&self) -> &'static str {
        self.inner.registry.name()
    }

    fn suspect(&self, service: &str, node: &Node) {
        self.inner.registry.suspect(service, node);
    }
}
