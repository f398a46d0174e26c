//! A registry on etcd, laid out as go-micro lays it out, so micro and go-micro
//! services registered in one etcd find each other.
//!
//! Each node is one key, `/micro/registry/<service>/<node id>`, whose value is the
//! service's JSON holding that node, attached to a lease of the registration's TTL.
//! The registry renews the lease at a third of the TTL and writes the key again
//! under a new lease if etcd lost it. A node whose process died without
//! deregistering is gone when its lease runs out.
//!
//! Given several members (`host:port,host:port`), the registry talks to one and
//! moves to the next when it cannot be reached. One watch of the prefix feeds every
//! [`Watcher`]; after a reconnection it reads the registry again and reports what
//! changed meanwhile.
//!
//! [`Registry::watch`] returns once the registry's first read of etcd succeeded;
//! changes made while etcd is unreachable are reported when it answers again.
//!
//! Reads are linearizable (go-micro's are serializable): a registration acknowledged
//! by one member is seen by the next read on any other. A read of many nodes comes in
//! pages of 1,000 keys, all at the first page's revision, so no registry is too big
//! for one gRPC message (4 MiB, about 6,400 nodes).
//!
//! The connection to a member is pinged every 10 s while a watch or keep-alive
//! stream is open, and never without: etcd cuts a client that pings more often
//! than every 5 s (GOAWAY `too_many_pings`).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), micro_registry::Error> {
//! use std::time::Duration;
//! use micro_registry::{EtcdRegistry, Node, RegisterOptions, Registry, Service};
//!
//! let registry = EtcdRegistry::new(["127.0.0.1:2379"])?;
//! let service = Service::new("go.micro.srv.vessel")
//!     .version("latest")
//!     .node(Node::new("go.micro.srv.vessel-1", "10.0.0.5:50051"));
//! let options = RegisterOptions::default().ttl(Duration::from_secs(90));
//! registry.register(&service, options).await?;
//! assert_eq!(registry.get_service("go.micro.srv.vessel").await?[0].nodes.len(), 1);
//! # Ok(()) }
//! ```

mod endpoints;
pub(crate) mod layout;
mod lease;
mod read;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::AbortHandle;

use self::endpoints::Endpoints;
use self::lease::Held;
use self::watch::WatchStatus;
use crate::registry::WatchHub;
use crate::{Error, RegisterOptions, Registry, Service, WatchOptions, Watcher};

/// The address used when none is given: a local etcd, as go-micro assumes.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";
/// How long one registry operation may take, retries over members included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry kept in etcd, compatible with go-micro's etcd registry.
///
/// Cheap to clone; clones share the connection, the leases and the watch. Dropping
/// the last clone stops renewing leases without deleting anything, as a crash
/// would: call [`Registry::deregister`] to leave at once.
///
/// See the [module documentation](self) for the layout and behaviour.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Arc<Endpoints>,
    /// Registrations with a lease, by key, each with the task renewing it.
    held: Mutex<HashMap<String, (Arc<Held>, AbortHandle)>>,
    /// Registrations and deregistrations run one at a time, so two of them never
    /// race on one key's lease.
    writes: tokio::sync::Mutex<()>,
    hub: WatchHub,
    status: tokio::sync::watch::Sender<WatchStatus>,
    watch_task: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, (_, task)) in lock(&self.held).drain() {
            task.abort();
        }
        if let Some(task) = lock(&self.watch_task).take() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a map insert or remove: a panic elsewhere
    // cannot leave the map half-changed.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds an [`EtcdRegistry`].
///
/// ```
/// use std::time::Duration;
/// use micro_registry::EtcdRegistry;
///
/// let registry = EtcdRegistry::builder()
///     .addresses(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3"])
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// # Ok::<(), micro_registry::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EtcdRegistryBuilder {
    addresses: Vec<String>,
    timeout: Duration,
}

impl Default for EtcdRegistryBuilder {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl EtcdRegistryBuilder {
    /// The members to talk to: `host:port`, `host` (port 2379) or `http://host:port`.
    /// None given: [`DEFAULT_ADDRESS`].
    #[must_use]
    pub fn addresses<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.addresses = addresses.into_iter().map(Into::into).collect();
        self
    }

    /// How long one operation may take, moving between members included
    /// (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the addresses and builds the registry. Nothing is dialled until the
    /// first operation, so this succeeds while etcd is still starting.
    pub fn build(self) -> Result<EtcdRegistry, Error> {
        let mut urls = Vec::new();
        for address in self
            .addresses
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
        {
            urls.push(member_url(address)?);
        }
        if urls.is_empty() {
            urls.push(member_url(DEFAULT_ADDRESS)?);
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("etcd timeout must be more than zero".into()));
        }
        let (status, _) = tokio::sync::watch::channel(WatchStatus::default());
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                endpoints: Arc::new(Endpoints::new(urls, self.timeout)),
                held: Mutex::new(HashMap::new()),
                writes: tokio::sync::Mutex::new(()),
                hub: WatchHub::new(),
                status,
                watch_task: Mutex::new(None),
            }),
        })
    }
}

/// `host:port`, `host` or `http://host:port` to the URL etcd-client dials.
pub(crate) fn member_url(address: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Config(format!("etcd address {address:?}: {why}"));
    if address.starts_with("https://") {
        return Err(bad("TLS to etcd is not supported yet; use http://"));
    }
    let host_port = address.strip_prefix("http://").unwrap_or(address);
    let host_port = host_port.strip_suffix('/').unwrap_or(host_port);
    // A bracketed IPv6 host ends at its ']'; a port, if any, follows after a ':'.
    let port_at = match host_port.strip_prefix('[') {
        Some(_) => match host_port.find(']') {
            Some(end) if host_port[end + 1..].is_empty() => None,
            Some(end) if host_port[end + 1..].starts_with(':') => Some(end + 1),
            _ => return Err(bad("expected [ipv6]:port")),
        },
        None => {
            if host_port.matches(':').count() > 1 {
                return Err(bad("write IPv6 addresses in brackets, [::1]:2379"));
            }
            host_port.rfind(':')
        }
    };
    if let Some(at) = port_at {
        if host_port[at + 1..].parse::<u16>().is_err() {
            return Err(bad("the port is not a number from 0 to 65535"));
        }
    }
    let has_port = port_at.is_some();
    let with_port = if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:2379")
    };
    let url = format!("http://{with_port}");
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) && uri.path() == "/" => Ok(url),
        Ok(_) => Err(bad("expected host:port")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

impl EtcdRegistry {
    /// A registry on the given members (see [`EtcdRegistryBuilder::addresses`]).
    pub fn new<I, S>(addresses: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder().addresses(addresses).build()
    }

    /// Options beyond the addresses.
    pub fn builder() -> EtcdRegistryBuilder {
        EtcdRegistryBuilder::default()
    }

    fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// Reads every value under `prefix`, skipping (and logging) those that are not
    /// a usable node.
    async fn read(&self, prefix: String) -> Result<Vec<Service>, Error> {
        let (_, kvs) = read::prefix(self.endpoints(), &prefix)
            .await
            .map_err(backend)?;
        Ok(kvs
            .iter()
            .filter_map(|(key, value)| match layout::decode(key, value) {
                Ok(service) => Some(service),
                Err(reason) => {
                    tracing::warn!(%reason, "ignoring an etcd registry value");
                    None
                }
            })
            .collect())
    }

    fn ensure_watching(&self) {
        let mut task = lock(&self.inner.watch_task);
        if task.is_none() {
            let handle = tokio::spawn(watch::run(
                Arc::clone(&self.inner.endpoints),
                self.inner.hub.clone(),
                self.inner.status.clone(),
            ));
            *task = Some(handle.abort_handle());
        }
    }

    /// Stops renewing `key`'s registration and returns its lease. Waits for a
    /// restore under way, so nothing is written for the key after this returns.
    async fn stop(&self, key: &str) -> Option<i64> {
        let (held, task) = lock(&self.inner.held).remove(key)?;
        let mut state = held.lock().await;
        state.stopped = true;
        task.abort();
        Some(state.lease)
    }

    /// Registers one node.
    async fn register_node(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Option<i64>,
    ) -> Result<(), Error> {
        let Some(ttl) = ttl else {
            // Stop renewing first, so no restore can write the key after this put;
            // the old lease, if any, then only needs to go.
            let old = self.stop(&key).await;
            let (k, v) = (key.clone(), value);
            self.endpoints()
                .call(|mut client| {
                    let (k, v) = (k.clone(), v.clone());
                    async move { client.put(k, v, None).await }
                })
                .await
                .map_err(backend)?;
            if let Some(lease) = old {
                self.revoke(lease).await;
            }
            return Ok(());
        };
        let existing = lock(&self.inner.held)
            .get(&key)
            .map(|(held, _)| Arc::clone(held));
        if let Some(held) = existing.filter(|held| held.ttl == ttl) {
            // Registered before with this TTL: one conditional write, no new lease
            // unless etcd lost it, and no event when nothing changed.
            let mut state = held.lock().await;
            let lease =
                lease::put_with_lease(self.endpoints(), &key, &value, ttl, Some(state.lease))
                    .await
                    .map_err(backend)?;
            state.lease = lease;
            state.value = value;
            return Ok(());
        }
        // New, or with another TTL: the old registration stops before the key moves
        // to a new lease, and its lease goes after.
        let old = self.stop(&key).await;
        let lease = lease::put_with_lease(self.endpoints(), &key, &value, ttl, None)
            .await
            .map_err(backend)?;
        if let Some(old) = old {
            self.revoke(old).await;
        }
        let held = Arc::new(Held::new(key.clone(), ttl, value, lease));
        let task = tokio::spawn(lease::keep_alive(
            Arc::clone(&self.inner.endpoints),
            Arc::clone(&held),
        ));
        lock(&self.inner.held).insert(key, (held, task.abort_handle()));
        Ok(())
    }

    async fn revoke(&self, lease: i64) {
        let revoked = self
            .endpoints()
            .call(|mut client| async move { client.lease_revoke(lease).await })
            .await;
        if let Err(e) = revoked {
            // It runs out by itself; revoking only frees it sooner.
            tracing::debug!(lease, error = %e, "etcd lease not revoked");
        }
    }
}

fn backend(e: etcd_client::Error) -> Error {
    Error::Backend {
        registry: "etcd",
        message: e.to_string(),
    }
}

/// Merges one-node values into services, one per version, nodes sorted by id.
fn merge(values: Vec<Service>) -> Vec<Service> {
    let mut by_version: BTreeMap<(String, String), Service> = BTreeMap::new();
    for mut value in values {
        let nodes = std::mem::take(&mut value.nodes);
        by_version
            .entry((value.name.clone(), value.version.clone()))
            .or_insert(value)
            .nodes
            .extend(nodes);
    }
    by_version
        .into_values()
        .map(|mut service| {
            service.nodes.sort_by(|a, b| a.id.cmp(&b.id));
            service
        })
        .collect()
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        crate::validate(service)?;
        layout::check_name("service name", &service.name, &service.name)?;
        // etcd grants whole seconds; round up so a node never expires early. No
        // TTL, or zero, is no lease, as in go-micro.
        let ttl = options
            .ttl
            .filter(|ttl| !ttl.is_zero())
            .map(|ttl| ttl.as_millis().div_ceil(1000).min(i64::MAX as u128) as i64);
        let mut nodes = Vec::with_capacity(service.nodes.len());
        for node in &service.nodes {
            layout::check_name("node id", &node.id, &service.name)?;
            nodes.push((
                layout::node_key(&service.name, &node.id),
                layout::encode(service, node)?,
            ));
        }
        let _writing = self.inner.writes.lock().await;
        // Every node is tried, as go-micro does; the last failure is reported.
        let mut failed = None;
        for (key, value) in nodes {
            if let Err(e) = self.register_node(key, value, ttl).await {
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let _writing = self.inner.writes.lock().await;
        let mut failed = None;
        for node in &service.nodes {
            let key = layout::node_key(&service.name, &node.id);
            let lease = self.stop(&key).await;
            let deleted = self
                .endpoints()
                .call(|mut client| {
                    let key = key.clone();
                    async move { client.delete(key, None).await }
                })
                .await;
            if let Err(e) = deleted {
                failed = Some(backend(e));
            }
            if let Some(lease) = lease {
                self.revoke(lease).await;
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let mut values = self.read(layout::service_prefix(name)).await?;
        // `a/b` and `a-b` share a key; only the service asked for is an answer.
        values.retain(|value| value.name == name);
        if values.is_empty() {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(merge(values))
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        Ok(merge(self.read(layout::PREFIX.to_string()).await?))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        // Subscribe first: whatever the watch reports from now on reaches this watcher.
        let watcher = self.inner.hub.watcher(options);
        self.ensure_watching();
        let mut status = self.inner.status.subscribe();
        let ready = tokio::time::timeout(self.endpoints().timeout(), status.wait_for(|s| s.ready))
            .await
            .is_ok_and(|r| r.is_ok());
        if ready {
            return Ok(watcher);
        }
        let reason = status.borrow().error.clone();
        Err(Error::Backend {
            registry: "etcd",
            message: format!(
                "watch not established: {}",
                reason.as_deref().unwrap_or("no answer from etcd")
            ),
        })
    }

    fn name(&self) -> &'static str {
        "etcd"
    }
}

#[cfg(test)]
mod tests {
    use super::member_url;

    #[test]
    fn member_urls() {
        assert_eq!(
            member_url("127.0.0.1:2379").ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(member_url("etcd").ok().as_deref(), Some("http://etcd:2379"));
        assert_eq!(
            member_url("http://etcd:2380/").ok().as_deref(),
            Some("http://etcd:2380")
        );
        assert_eq!(
            member_url("[::1]:2379").ok().as_deref(),
            Some("http://[::1]:2379")
        );
        assert_eq!(
            member_url("[::1]").ok().as_deref(),
            Some("http://[::1]:2379")
        );
        for bad in [
            "etcd:port",
            "::1",
            "https://etcd:2379",
            "etcd:99999",
            "a b:1",
            "h:1/x",
        ] {
            assert!(member_url(bad).is_err(), "{bad} accepted");
        }
    }
}
