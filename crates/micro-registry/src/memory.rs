//! An in-process registry: for tests, and for services that share one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::registry::WatchHub;
use crate::{Action, Error, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher};

/// How often expired nodes are swept out when some registration has a TTL.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A registry that lives in memory, safe to share between tasks.
///
/// Nodes registered with a TTL disappear when they are not registered again within
/// it, and watchers then get one [`Action::Delete`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_registry::Error> {
/// use micro_registry::{MemoryRegistry, Node, RegisterOptions, Registry, Service};
///
/// let registry = MemoryRegistry::new();
/// let service = Service::new("greeter").node(Node::new("greeter-1", "127.0.0.1:9000"));
/// registry.register(&service, RegisterOptions::default()).await?;
/// assert_eq!(registry.get_service("greeter").await?[0].nodes.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    hub: std::sync::OnceLock<WatchHub>,
}

#[derive(Debug, Default)]
struct State {
    /// name -> version -> entry
    services: HashMap<String, HashMap<String, Entry>>,
    sweeper_running: bool,
}

#[derive(Debug)]
struct Entry {
    /// The service without nodes.
    service: Service,
    nodes: HashMap<String, (Node, Option<Instant>)>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn hub(&self) -> &WatchHub {
        self.inner.hub.get_or_init(WatchHub::new)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters to readers, so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes nodes whose TTL ran out; returns whether any registration still has a TTL.
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut any_ttl = false;
        {
            let mut state = self.state();
            for versions in state.services.values_mut() {
                for entry in versions.values_mut() {
                    entry.nodes.retain(|_, (node, expiry)| match expiry {
                        Some(at) if *at <= now => {
                            expired.push(entry.service.clone().node(node.clone()));
                            false
                        }
                        Some(_) => {
                            any_ttl = true;
                            true
                        }
                        None => true,
                    });
                }
                versions.retain(|_, entry| !entry.nodes.is_empty());
            }
            state.services.retain(|_, versions| !versions.is_empty());
            if !any_ttl {
                state.sweeper_running = false;
            }
        }
        for service in expired {
            tracing::debug!(service = %service.name, node = %service.nodes[0].id, "registration expired");
            self.hub().publish(Action::Delete, service);
        }
        any_ttl
    }

    fn start_sweeper(&self) {
        {
            let mut state = self.state();
            if state.sweeper_running {
                return;
            }
            state.sweeper_running = true;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let spawned = tokio::runtime::Handle::try_current().map(|handle| {
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    let Some(inner) = weak.upgrade() else { return };
                    if !(MemoryRegistry { inner }).sweep() {
                        return;
                    }
                }
            })
        });
        if spawned.is_err() {
            // Outside a runtime expiry still happens, lazily, on every read.
            self.state().sweeper_running = false;
        }
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        crate::validate(service)?;
        let expiry = options.ttl.map(|ttl| Instant::now() + ttl);
        let mut events = Vec::new();
        {
            let mut state = self.state();
            let versions = state.services.entry(service.name.clone()).or_default();
            let entry = versions
                .entry(service.version.clone())
                .or_insert_with(|| Entry {
                    service: Service {
                        nodes: Vec::new(),
                        ..service.clone()
                    },
                    nodes: HashMap::new(),
                });
            entry.service.metadata.clone_from(&service.metadata);
            entry.service.endpoints.clone_from(&service.endpoints);
            let bare = entry.service.clone();
            for node in &service.nodes {
                let previous = entry.nodes.insert(node.id.clone(), (node.clone(), expiry));
                match previous {
                    None => events.push((Action::Create, bare.clone().node(node.clone()))),
                    Some((old, _)) if old != *node => {
                        events.push((Action::Update, bare.clone().node(node.clone())))
                    }
                    Some(_) => {}
                }
            }
        }
        for (action, service) in events {
            self.hub().publish(action, service);
        }
        if expiry.is_some() {
            self.start_sweeper();
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let mut removed = Vec::new();
        {
            let mut state = self.state();
            if let Some(versions) = state.services.get_mut(&service.name) {
                if let Some(entry) = versions.get_mut(&service.version) {
                    for node in &service.nodes {
                        if let Some((node, _)) = entry.nodes.remove(&node.id) {
                            removed.push(entry.service.clone().node(node));
                        }
                    }
                    if entry.nodes.is_empty() {
                        versions.remove(&service.version);
                    }
                }
                if versions.is_empty() {
                    state.services.remove(&service.name);
                }
            }
        }
        for service in removed {
            self.hub().publish(Action::Delete, service);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.sweep();
        let state = self.state();
        let versions = state
            .services
            .get(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let mut out: Vec<Service> = versions
            .values()
            .map(|entry| {
                let mut service = entry.service.clone();
                service.nodes = entry.nodes.values().map(|(n, _)| n.clone()).collect();
                service.nodes.sort_by(|a, b| a.id.cmp(&b.id));
                service
            })
            .collect();
        out.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(out)
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.sweep();
        let state = self.state();
        let mut out: Vec<Service> = state
            .services
            .iter()
            .flat_map(|(name, versions)| {
                versions
                    .keys()
                    .map(|version| Service::new(name.clone()).version(version.clone()))
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        Ok(self.hub().watcher(options))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
