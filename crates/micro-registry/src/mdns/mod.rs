//! The mDNS registry: discovery on one LAN with nothing to install.
//!
//! # Wire format
//!
//! Standard DNS-SD (RFC 6763) over mDNS (RFC 6762), built on the `mdns-sd` crate:
//!
//! - service type `_micro._tcp.local.`; every node of every micro service is one
//!   instance of it, so `avahi-browse -rt _micro._tcp` lists them all;
//! - instance name: the node id (ids longer than a DNS label, 63 bytes, are cut and
//!   given a hash suffix; the full id is in the TXT record);
//! - SRV and A/AAAA: the node's address and port, on a host name derived from the node id;
//! - TXT: the service name, version, node id, node metadata and endpoints, laid out as
//!   described in [`txt`](self::txt) (keys `txtvers`, `service`, `version`, `id`,
//!   `meta.N`, `ep.N`). At most [`MAX_TXT_BYTES`] per node; more is refused at
//!   registration with [`Error::InvalidService`].
//!
//! Service-level metadata is not announced (go-micro's mDNS registry does not either).
//!
//! # Interfaces
//!
//! All normal interfaces by default. [`MdnsInterfaces::Loopback`] keeps every packet on
//! the loopback interface (for tests and single-machine demos); set it with
//! [`MdnsRegistry::builder`] or `MICRO_MDNS_INTERFACES=loopback` (also: `all`, or a
//! comma-separated list of interface names).
//!
//! # Timing
//!
//! Node ids are unique by construction (`name-uuid`), so name-conflict probing is
//! turned off and a registration is announced at once. A registry keeps one browse of
//! `_micro._tcp.local.` running from the moment it is built, so lookups are answered
//! from memory. As it starts it also sends one "legacy unicast" query (RFC 6762 §6.7,
//! from an ephemeral port), which every responder answers at once by unicast: the
//! multicast answers the browse relies on are rate-limited to one per record per second,
//! so a process started just after a service would otherwise wait up to a second. Only
//! in the first [`MdnsRegistry::WARMUP`] after start does a lookup of an unknown name
//! wait for answers to arrive; after that a miss is answered at once.

mod query;
pub(crate) mod txt;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperty};
use tokio::sync::Notify;

pub use self::txt::MAX_TXT_BYTES;
use crate::registry::WatchHub;
use crate::{Action, Error, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher};

/// The DNS-SD service type every micro node is announced under.
pub const SERVICE_TYPE: &str = "_micro._tcp.local.";
/// Environment variable that picks the interfaces mDNS uses.
pub const ENV_INTERFACES: &str = "MICRO_MDNS_INTERFACES";
/// How long the start-up query collects answers.
const QUERY_WINDOW: Duration = Duration::from_millis(250);
/// The most remote instances kept; more are ignored (and counted) so memory stays bounded.
pub const MAX_INSTANCES: usize = 4096;

/// Which network interfaces the mDNS registry sends and listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnsInterfaces {
    /// Every interface (the default).
    #[default]
    All,
    /// Only loopback: nothing leaves the machine.
    Loopback,
    /// Only the named interfaces (and loopback, so the machine can see itself).
    Named(Vec<String>),
}

impl MdnsInterfaces {
    /// Reads `MICRO_MDNS_INTERFACES`: `all` (or unset), `loopback`/`lo`, or `eth0,wlan0`.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var(ENV_INTERFACES) {
            Ok(value) => value.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::All),
            Err(e) => Err(Error::Config(format!("{ENV_INTERFACES}: {e}"))),
        }
    }
}

impl std::str::FromStr for MdnsInterfaces {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        match s {
            "" | "all" => Ok(Self::All),
            "loopback" | "lo" => Ok(Self::Loopback),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect();
                if names.iter().any(|n| n.contains(char::is_whitespace)) {
                    return Err(Error::Config(format!(
                        "{ENV_INTERFACES}={s:?}: expected all, loopback or a comma-separated list of interface names"
                    )));
                }
                Ok(Self::Named(names))
            }
        }
    }
}

/// Counters of what the registry saw on the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MdnsStats {
    /// Instances of `_micro._tcp` whose records could not be read (ignored).
    pub malformed: u64,
    /// Instances ignored because [`MAX_INSTANCES`] were already known.
    pub over_limit: u64,
}

/// Builds an [`MdnsRegistry`].
#[derive(Clone, Debug, Default)]
pub struct MdnsRegistryBuilder {
    interfaces: Option<MdnsInterfaces>,
}

impl MdnsRegistryBuilder {
    /// Restricts the interfaces (default: `MICRO_MDNS_INTERFACES`, else all).
    #[must_use]
    pub fn interfaces(mut self, interfaces: MdnsInterfaces) -> Self {
        self.interfaces = Some(interfaces);
        self
    }

    /// Only loopback: shorthand for `.interfaces(MdnsInterfaces::Loopback)`.
    #[must_use]
    pub fn loopback_only(self) -> Self {
        self.interfaces(MdnsInterfaces::Loopback)
    }

    /// Starts the mDNS daemon and the browse of `_micro._tcp.local.`.
    pub fn build(self) -> Result<MdnsRegistry, Error> {
        let interfaces = match self.interfaces {
            Some(i) => i,
            None => MdnsInterfaces::from_env()?,
        };
        let daemon = ServiceDaemon::new().map_err(backend)?;
        match &interfaces {
            MdnsInterfaces::All => {}
            MdnsInterfaces::Loopback => {
                daemon.disable_interface(IfKind::All).map_err(backend)?;
                daemon
                    .enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                    .map_err(backend)?;
            }
            MdnsInterfaces::Named(names) => {
                daemon.disable_interface(IfKind::All).map_err(backend)?;
                let mut kinds: Vec<IfKind> = names.iter().cloned().map(IfKind::Name).collect();
                kinds.extend([IfKind::LoopbackV4, IfKind::LoopbackV6]);
                daemon.enable_interface(kinds).map_err(backend)?;
            }
        }
        let events = daemon.browse(SERVICE_TYPE).map_err(backend)?;
        let shared = Arc::new(Shared {
            cache: Mutex::new(Cache::default()),
            changed: Notify::new(),
            hub: WatchHub::new(),
            malformed: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
        });
        let listener = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("micro-mdns-events".into())
            .spawn(move || {
                // Ends when the daemon shuts down and drops the channel.
                while let Ok(event) = events.recv() {
                    listener.on_event(event);
                }
            })
            .map_err(|e| backend(format!("spawning the mDNS event thread: {e}")))?;
        let out_of = match &interfaces {
            MdnsInterfaces::Loopback => Some(std::net::Ipv4Addr::LOCALHOST),
            _ => None,
        };
        let querier = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("micro-mdns-query".into())
            .spawn(move || {
                match query::query(out_of, QUERY_WINDOW, |heard| querier.absorb(heard)) {
                    Ok(_) => {}
                    // The browse still finds everything, only up to a second later.
                    Err(e) => tracing::debug!(error = %e, "legacy unicast mDNS query failed"),
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no legacy unicast mDNS query");
        }
        Ok(MdnsRegistry {
            inner: Arc::new(Inner {
                daemon,
                shared,
                started: Instant::now(),
                interfaces,
                own: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Discovery over multicast DNS: zero set-up on one LAN. The default registry.
///
/// Cloning is cheap; clones share one mDNS daemon. Build one per process (two daemons
/// in one process compete for port 5353).
///
/// ```no_run
/// # fn main() -> Result<(), micro_registry::Error> {
/// use micro_registry::MdnsRegistry;
///
/// // Loopback only: for tests and demos on one machine.
/// let registry = MdnsRegistry::builder().loopback_only().build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: ServiceDaemon,
    shared: Arc<Shared>,
    started: Instant,
    interfaces: MdnsInterfaces,
    /// Nodes this process registered: node id -> mDNS full name.
    own: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("interfaces", &self.interfaces)
            .field("own", &lock(&self.own).len())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Withdraws what is still registered (goodbye packets) and stops the thread.
        let _ = self.daemon.shutdown();
    }
}

#[derive(Debug)]
struct Shared {
    cache: Mutex<Cache>,
    changed: Notify,
    hub: WatchHub,
    malformed: AtomicU64,
    over_limit: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    /// service name -> node id -> that node as a one-node service.
    services: HashMap<String, BTreeMap<String, Service>>,
    /// mDNS instance full name (unescaped) -> (service name, node id).
    index: HashMap<String, (String, String)>,
}

/// mdns-sd writes dots inside the instance label as `\.`; DNS wire names have none.
/// Both forms name the same instance.
fn normalize(fullname: &str) -> String {
    fullname.replace("\\.", ".")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn remove_node(cache: &mut Cache, (name, id): &(String, String)) -> Option<Service> {
    let nodes = cache.services.get_mut(name)?;
    let removed = nodes.remove(id);
    if nodes.is_empty() {
        cache.services.remove(name);
    }
    removed
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        registry: "mdns",
        message: e.to_string(),
    }
}

impl Shared {
    fn on_event(&self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                let pairs = resolved
                    .get_properties()
                    .iter()
                    .map(|p: &TxtProperty| (p.key(), p.val()));
                let decoded = match txt::decode(pairs) {
                    Ok(d) => d,
                    Err(e) => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(instance = %resolved.fullname, error = %e, "ignoring malformed mDNS instance");
                        return;
                    }
                };
                let mut addrs: Vec<IpAddr> = resolved
                    .get_addresses()
                    .iter()
                    .map(|a| a.to_ip_addr())
                    .collect();
                // Prefer IPv4, then the lowest address, so every process picks the same one.
                addrs.sort_by_key(|a| (!a.is_ipv4(), *a));
                let Some(ip) = addrs.first().copied() else {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let service = decoded.into_service(SocketAddr::new(ip, resolved.port).to_string());
                self.upsert(&resolved.fullname, service);
            }
            ServiceEvent::ServiceRemoved(_, fullname) => self.remove(&fullname),
            _ => {}
        }
    }

    fn upsert(&self, fullname: &str, service: Service) {
        let fullname = normalize(fullname);
        let Some(id) = service.nodes.first().map(|n| n.id.clone()) else {
            return;
        };
        let key = (service.name.clone(), id.clone());
        let mut events = Vec::new();
        {
            let mut cache = lock(&self.cache);
            if !cache.index.contains_key(&fullname) && cache.index.len() >= MAX_INSTANCES {
                self.over_limit.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The same instance now describing another node or service: the old one left.
            if let Some(old) = cache.index.insert(fullname, key.clone()) {
                if old != key {
                    if let Some(gone) = remove_node(&mut cache, &old) {
                        events.push((Action::Delete, gone));
                    }
                }
            }
            let nodes = cache.services.entry(key.0.clone()).or_default();
            match nodes.insert(id, service.clone()) {
                None => events.push((Action::Create, service)),
                Some(previous) if previous != service => events.push((Action::Update, service)),
                Some(_) => {}
            }
        }
        self.publish(events);
    }

    fn remove(&self, fullname: &str) {
        let fullname = normalize(fullname);
        let removed = {
            let mut cache = lock(&self.cache);
            let Some(key) = cache.index.remove(&fullname) else {
                return;
            };
            remove_node(&mut cache, &key)
        };
        if let Some(service) = removed {
            self.publish(vec![(Action::Delete, service)]);
        }
    }

    fn publish(&self, events: Vec<(Action, Service)>) {
        if events.is_empty() {
            return;
        }
        for (action, service) in events {
            tracing::debug!(service = %service.name, node = ?service.nodes.first().map(|n| &n.id), ?action, "mdns");
            self.hub.publish(action, service);
        }
        self.changed.notify_waiters();
    }

    /// Feeds what a legacy unicast query heard into the cache.
    fn absorb(&self, heard: &query::Heard) {
        if heard.malformed > 0 {
            self.malformed.fetch_add(heard.malformed, Ordering::Relaxed);
        }
        for (fullname, port, addrs, txt) in heard.resolved() {
            let pairs = txt
                .iter()
                .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, v.as_deref())));
            let (Ok(decoded), Some(address)) =
                (txt::decode(pairs), query::pick_address(addrs, port))
            else {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.upsert(fullname, decoded.into_service(address.to_string()));
        }
    }

    fn lookup(&self, name: &str) -> Option<Vec<Service>> {
        let cache = lock(&self.cache);
        let nodes = cache.services.get(name)?;
        let mut versions: BTreeMap<&str, Service> = BTreeMap::new();
        for one in nodes.values() {
            let entry = versions
                .entry(one.version.as_str())
                .or_insert_with(|| Service {
                    nodes: Vec::new(),
                    ..one.clone()
                });
            entry.nodes.extend(one.nodes.iter().cloned());
        }
        Some(versions.into_values().collect())
    }
}

/// mDNS labels hold at most 63 bytes.
const MAX_LABEL: usize = 63;

/// The DNS-SD instance label for a node id: the id itself when it fits.
fn instance_label(node_id: &str) -> String {
    if node_id.len() <= MAX_LABEL {
        return node_id.to_string();
    }
    let suffix = format!("-{:016x}", fnv1a(node_id.as_bytes()));
    let mut cut = MAX_LABEL - suffix.len();
    while !node_id.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &node_id[..cut])
}

/// A host name for a node: letters, digits and dashes from its id, unique per node.
fn host_label(node_id: &str) -> String {
    let clean: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean.len() <= MAX_LABEL && !clean.is_empty() {
        clean.to_string()
    } else {
        format!("micro-{:016x}", fnv1a(node_id.as_bytes()))
    }
}

/// FNV-1a: a stable hash, the same in every process and release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl MdnsRegistry {
    /// How long after start a lookup of an unknown service waits for mDNS answers.
    /// After it, the browse has heard every live node and a miss is answered at once.
    pub const WARMUP: Duration = Duration::from_millis(500);

    /// A registry configured from the environment (`MICRO_MDNS_INTERFACES`).
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A builder for options.
    pub fn builder() -> MdnsRegistryBuilder {
        MdnsRegistryBuilder::default()
    }

    /// The interfaces in use.
    pub fn interfaces(&self) -> &MdnsInterfaces {
        &self.inner.interfaces
    }

    /// What was ignored on the network so far.
    pub fn stats(&self) -> MdnsStats {
        MdnsStats {
            malformed: self.inner.shared.malformed.load(Ordering::Relaxed),
            over_limit: self.inner.shared.over_limit.load(Ordering::Relaxed),
        }
    }

    fn service_info(service: &Service, node: &Node) -> Result<ServiceInfo, Error> {
        let invalid = |reason: String| Error::InvalidService {
            service: service.name.clone(),
            reason,
        };
        let addr: SocketAddr = node.address.parse().map_err(|_| {
            invalid(format!(
                "node {} address {:?} is not ip:port; mDNS announces IP addresses",
                node.id, node.address
            ))
        })?;
        if addr.ip().is_unspecified() {
            return Err(invalid(format!(
                "node {} address {} is unspecified; announce an address other hosts can reach",
                node.id, node.address
            )));
        }
        let pairs = txt::encode(service, node).map_err(invalid)?;
        let properties: Vec<TxtProperty> = pairs.into_iter().map(TxtProperty::from).collect();
        let host = format!("{}.local.", host_label(&node.id));
        let mut info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance_label(&node.id),
            &host,
            addr.ip(),
            addr.port(),
            properties,
        )
        .map_err(|e| invalid(e.to_string()))?;
        // Node ids are unique by construction, so probing for name conflicts only
        // delays the announcement by about a second.
        info.set_requires_probe(false);
        Ok(info)
    }
}

#[async_trait]
impl Registry for MdnsRegistry {
    async fn register(&self, service: &Service, _options: RegisterOptions) -> Result<(), Error> {
        crate::validate(service)?;
        for node in &service.nodes {
            let info = Self::service_info(service, node)?;
            let fullname = info.get_fullname().to_string();
            let already = lock(&self.inner.own).get(&node.id) == Some(&fullname);
            if !already {
                self.inner.daemon.register(info).map_err(backend)?;
                lock(&self.inner.own).insert(node.id.clone(), fullname.clone());
            }
            // This process sees its own node at once, without waiting for the loopback echo.
            let one = Service {
                nodes: vec![node.clone()],
                metadata: HashMap::new(),
                ..service.clone()
            };
            self.inner.shared.upsert(&fullname, one);
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        for node in &service.nodes {
            let Some(fullname) = lock(&self.inner.own).remove(&node.id) else {
                continue;
            };
            let status = self.inner.daemon.unregister(&fullname).map_err(backend)?;
            // The goodbye is sent by the daemon thread; wait for it (bounded) so that a
            // process that exits right after deregistering has really said goodbye.
            let waited = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
            if !matches!(waited, Ok(Ok(_))) {
                tracing::warn!(node = %node.id, "mDNS goodbye not confirmed within 1s");
            }
            self.inner.shared.remove(&fullname);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let deadline = self.inner.started + Self::WARMUP;
        loop {
            let changed = self.inner.shared.changed.notified();
            if let Some(found) = self.inner.shared.lookup(name) {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NotFound(name.to_string()));
            }
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        let remaining =
            (self.inner.started + Self::WARMUP).saturating_duration_since(Instant::now());
        if !remaining.is_zero() {
            tokio::time::sleep(remaining).await;
        }
        let names: Vec<String> = lock(&self.inner.shared.cache)
            .services
            .keys()
            .cloned()
            .collect();
        let mut out: Vec<Service> = names
            .iter()
            .filter_map(|n| self.inner.shared.lookup(n))
            .flatten()
            .collect();
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        Ok(self.inner.shared.hub.watcher(options))
    }

    fn name(&self) -> &'static str {
        "mdns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_get_short_unique_labels() {
        let long = format!("{}-0f8fad5b-d9cb-469f-a165-70867728950e", "x".repeat(80));
        let label = instance_label(&long);
        assert!(label.len() <= MAX_LABEL);
        assert_ne!(label, instance_label(&format!("{long}1")));
        assert_eq!(
            instance_label("go.micro.srv.vessel-1"),
            "go.micro.srv.vessel-1"
        );
        assert!(host_label(&long).len() <= MAX_LABEL);
        assert_eq!(host_label("go.micro.srv.vessel-1"), "go-micro-srv-vessel-1");
    }

    #[test]
    fn interfaces_parse() {
        assert_eq!(
            "loopback".parse::<MdnsInterfaces>(),
            Ok(MdnsInterfaces::Loopback)
        );
        assert_eq!("".parse::<MdnsInterfaces>(), Ok(MdnsInterfaces::All));
        assert_eq!(
            "eth0, wlan0".parse::<MdnsInterfaces>(),
            Ok(MdnsInterfaces::Named(vec!["eth0".into(), "wlan0".into()]))
        );
    }
}
