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
//! - TXT, one key per string: `txtvers=1`, `service=<name>`, `version=<version>`,
//!   `id=<node id>`, `ttl=<seconds>` (the registration's TTL, when it has one), and
//!   `meta.0`, `meta.1`, ... (node metadata as a JSON object) and `ep.0`, `ep.1`, ...
//!   (the endpoints as go-micro's JSON), JSON cut into pieces of 240 bytes and joined in
//!   index order. At most [`MAX_TXT_BYTES`] per node; more is refused at registration
//!   with [`Error::InvalidService`].
//!
//! `avahi-browse -rt _micro._tcp` and python-zeroconf list every node with its service
//! name (the `service` key) and address (SRV and A); the interop test checks the latter.
//!
//! Service-level metadata is not announced (go-micro's mDNS registry does not either).
//!
//! # Interfaces
//!
//! All normal interfaces by default. [`MdnsInterfaces::Loopback`] keeps every packet on
//! the loopback interface (for tests and single-machine demos); set it with
//! [`MdnsRegistry::builder`], [`RegistryConfig::mdns_interfaces`] or, through
//! [`RegistryConfig::from_env`], `MICRO_MDNS_INTERFACES=loopback` (also: `all`, or a
//! comma-separated list of interface names).
//!
//! [`RegistryConfig::mdns_interfaces`]: method@crate::RegistryConfig::mdns_interfaces
//! [`RegistryConfig::from_env`]: crate::RegistryConfig::from_env
//!
//! # Timing
//!
//! Node ids are unique by construction (`name-uuid`), so name-conflict probing is
//! turned off and a registration is announced at once. Lookups are answered from
//! memory: what the registry heard when it asked at start-up (below), then every
//! announcement, goodbye and answer its listener on the mDNS port hears (nodes
//! announce themselves when they register and every third of their TTL). Only when
//! that port cannot be shared, or the start-up question could not be sent, or when
//! asked ([`MdnsRegistryBuilder::browse`]), does it also run mdns-sd's browse of
//! `_micro._tcp.local.`: a browse costs each registry work that grows with the
//! number of nodes (its daemon scans its whole cache at every wake-up, and repeats
//! its question with every known answer attached), measured in `make bench-scale`.
//!
//! As it starts, a registry asks who is there with a "legacy unicast" query (RFC 6762
//! §6.7, from an ephemeral port), which every responder answers at once by unicast:
//! multicast answers are rate-limited to one per record per second, so a process
//! started just after a service would otherwise wait up to a second. It listens [`FIRST_ANSWER`] for a first answer and then as long as answers
//! keep coming: a silence three times as long as the slowest answer took, between
//! [`MIN_QUIET`] and [`QUIET`], ends it. Then it asks a second time on the same
//! socket, for answers lost in the burst; a late answer to the first question still
//! counts. Until both are done (at most [`MdnsRegistry::WARMUP`] after start) every
//! lookup waits for them, so the first answer lists every node that answered, not
//! only the first few: about 2 × [`MIN_QUIET`] (60–70 ms) when nodes are there on a
//! quiet host, up to 2 × [`QUIET`] on a busy one, 2 × [`FIRST_ANSWER`] (0.5 s) when
//! nobody answers. After that, lookups are answered from memory at once, a miss
//! included.
//!
//! # Leaving, and dying
//!
//! Deregistering sends mDNS goodbyes (TTL 0). A goodbye heard by the listener on the
//! mDNS port removes the node at once, rather than after the one second RFC 6762
//! §10.1 lets a cache keep it, and answers about that node arriving in the next few
//! seconds (a responder's late, delayed answer) are ignored. Node ids are never reused, so nothing legitimate is lost by this.
//!
//! A node whose process is killed sends no goodbye. So each registry announces its
//! own nodes again (an unsolicited multicast answer, heard by every registry) every
//! third of their TTL, between 2 s and 30 s, and every registry forgets a node not
//! heard from within its TTL: the `ttl` TXT key, which services fill from their
//! register TTL (`MICRO_REGISTER_TTL`, 90 s by default, as go-micro's), or
//! [`DEFAULT_TTL`] when a registration has none. A node silent for 80 % of its TTL
//! (two announcements missed; with a TTL under 4 s, from 0.75 s before it ends) is
//! asked directly, as a suspected node is (below), and again every tenth of its TTL,
//! so a node whose announcements are lost, or a peer that does not announce, is kept
//! while it answers. Liveness thus costs one multicast packet per node per period,
//! whatever the number of registries listening; `make bench-scale` measures it.
//!
//! Callers need not wait that long: a client that cannot connect to a node calls
//! [`Registry::suspect`], and the registry asks that node directly (a legacy unicast
//! query for its instance and its host). A node that does not answer within
//! [`SUSPECT_WINDOW`] is dropped, with a Delete event for watchers, about a quarter of a
//! second after the call; one that answers stays. Suspecting a node that is already
//! being checked, one this process registered, or one it does not know does nothing.
//!
//! # Errors of this process
//!
//! A failure here is no news about the nodes: when this process cannot ask (out of
//! file descriptors, no interface, a socket error), it logs the error and keeps what
//! it knows, and nodes expire by their TTL as usual. In particular mdns-sd, when its
//! periodic interface check fails (it does with `EMFILE`), drops every instance it
//! knows and reports each as removed; this registry then asks those nodes, and keeps
//! them when it cannot.
//!
//! # Hostile input
//!
//! Records that do not decode (missing keys, bad UTF-8 or JSON, missing pieces,
//! oversized values) are ignored and counted once per instance ([`MdnsRegistry::stats`]);
//! at most [`MAX_INSTANCES`] remote instances are kept. Nothing is decompressed.

mod builder;
mod check;
mod listen;
pub(crate) mod query;
mod state;
pub(crate) mod txt;

pub(crate) use self::builder::parse_interfaces;
pub use self::builder::{MdnsInterfaces, MdnsRegistryBuilder};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo, TxtProperty};

use self::query::Window;
use self::state::{Shared, normalize};
pub use self::txt::MAX_TXT_BYTES;
use crate::{Error, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher};

/// The DNS-SD service type every micro node is announced under.
pub const SERVICE_TYPE: &str = "_micro._tcp.local.";
/// Environment variable that picks the interfaces mDNS uses (read by
/// [`RegistryConfig::from_env`](crate::RegistryConfig::from_env)).
pub const ENV_INTERFACES: &str = "MICRO_MDNS_INTERFACES";
/// How long a query waits for its first answer. Responders answer a legacy unicast
/// query at once, so this is mostly for a host busy enough to be slow.
pub const FIRST_ANSWER: Duration = Duration::from_millis(250);
/// Once answers arrive, the longest a query waits for the next before it ends: long
/// enough for the burst of answers from every responder on a busy host to come in.
/// It waits three times as long as the answers so far took, at least [`MIN_QUIET`]:
/// answers on one quiet host take a millisecond or two.
pub const QUIET: Duration = Duration::from_millis(100);
/// The shortest a query waits, after an answer, for the next.
pub const MIN_QUIET: Duration = Duration::from_millis(30);
/// How long a suspected node ([`Registry::suspect`]) has to answer before it is
/// dropped. A live responder answers a unicast query within milliseconds, even on a
/// loaded host; a quarter of a second tolerates a slow one and still drops a dead node
/// long before a client's retries (five, within the call's deadline) run out.
pub const SUSPECT_WINDOW: Duration = Duration::from_millis(250);
/// How long a node lives without a sign of life when its registration gave no TTL
/// (go-micro's default register TTL).
pub const DEFAULT_TTL: Duration = Duration::from_secs(90);
/// How often the registry's own thread looks for work: announcements due, nodes gone
/// quiet, nodes expired.
const TICK: Duration = Duration::from_millis(250);
/// Bounds on how often a node of this process is announced again: a third of its TTL,
/// within these. mdns-sd multicasts a record at most once a second, and repeats each
/// announcement a second later: two seconds apart, no announcement is cut.
const MIN_ANNOUNCE: Duration = Duration::from_secs(2);
const MAX_ANNOUNCE: Duration = Duration::from_secs(30);
/// The most remote instances kept; more are ignored (and counted) so memory stays bounded.
pub const MAX_INSTANCES: usize = 4096;

/// Counters of what the registry saw on the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MdnsStats {
    /// Instances of `_micro._tcp` whose records could not be read (ignored).
    pub malformed: u64,
    /// Instances ignored because [`MAX_INSTANCES`] were already known.
    pub over_limit: u64,
    /// Suspected nodes asked whether they are alive (see [`Registry::suspect`]).
    pub suspects_asked: u64,
    /// Nodes asked because nothing was heard from them for 80 % of their TTL (two
    /// announcements missed); each expires by its TTL unless it answers.
    pub quiet_asked: u64,
    /// Of those, the ones that answered (and were kept).
    pub suspects_answered: u64,
    /// Of those, the ones that did not answer and were dropped.
    pub suspects_dropped: u64,
    /// Suspected nodes that could not be asked (no socket, no interface, no thread):
    /// kept.
    pub check_errors: u64,
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
    /// Nodes this process registered, by node id; shared with the thread that
    /// announces them again.
    own: Arc<Mutex<HashMap<String, Own>>>,
}

/// A node this process registered: its mDNS full name, the records it announces, and
/// how often it announces them again.
struct Own {
    fullname: String,
    info: ServiceInfo,
    every: Duration,
    announced: Instant,
}

/// How often a node registered with `ttl` is announced again: three times within its
/// TTL, so that missing one announcement costs it nothing.
fn announce_every(ttl: Option<Duration>) -> Duration {
    (ttl.unwrap_or(DEFAULT_TTL) / 3).clamp(MIN_ANNOUNCE, MAX_ANNOUNCE)
}

/// Announces again the nodes of this process that are due. The lock is held while the
/// command is queued, so that a deregistration (which takes the node out under the
/// same lock before it says goodbye) is never followed by a late announcement.
fn announce_due(daemon: &ServiceDaemon, own: &Mutex<HashMap<String, Own>>) {
    let now = Instant::now();
    let mut own = lock(own);
    for node in own.values_mut() {
        if now.duration_since(node.announced) < node.every {
            continue;
        }
        match daemon.register(node.info.clone()) {
            Ok(()) => node.announced = now,
            // The command queue is full or the daemon is stopping: the next tick
            // tries again.
            Err(e) => {
                tracing::debug!(error = %e, node = %node.fullname, "mDNS announcement not queued")
            }
        }
    }
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        registry: "mdns",
        message: e.to_string(),
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

/// Browses `_micro._tcp.local.` with mdns-sd, feeding `shared`: how a registry finds
/// nodes when it cannot listen on the mDNS port itself, or could not ask who is there
/// at start-up. (Otherwise it does not browse: see `listen` for what that costs.)
fn browse(daemon: &ServiceDaemon, shared: Arc<Shared>) -> Result<(), Error> {
    let events = daemon.browse(SERVICE_TYPE).map_err(backend)?;
    spawn("micro-mdns-events", move || {
        // Ends when the daemon shuts down and drops the channel.
        while let Ok(event) = events.recv() {
            shared.on_event(event);
        }
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| backend(format!("spawning thread {name}: {e}")))
}

/// The IPv4 addresses of the interfaces in use (the passive listener joins on these).
fn interface_ips(interfaces: &MdnsInterfaces) -> Vec<Ipv4Addr> {
    let all = if_addrs::get_if_addrs().unwrap_or_default();
    let v4 = |i: &if_addrs::Interface| match i.ip() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    };
    let mut ips: Vec<Ipv4Addr> = match interfaces {
        MdnsInterfaces::All => all.iter().filter_map(v4).collect(),
        MdnsInterfaces::Loopback => vec![Ipv4Addr::LOCALHOST],
        MdnsInterfaces::Named(names) => all
            .iter()
            .filter(|i| names.contains(&i.name))
            .filter_map(v4)
            .chain([Ipv4Addr::LOCALHOST])
            .collect(),
    };
    ips.sort();
    ips.dedup();
    ips
}

/// Asks the network who is there at once, twice (so a new process knows running
/// services within milliseconds, all of them); then, every [`TICK`], announces this
/// process's nodes again when due, asks remote nodes that have gone quiet whether they
/// are still there, and expires the ones not heard from within their TTL. Ends when
/// the registry is dropped.
///
/// Liveness costs the network one announcement per node per third of its TTL, heard
/// by everyone: it grows with the number of nodes. (Each registry asking everyone,
/// as it did before, grew with its square.)
fn refresh_loop(
    interfaces: MdnsInterfaces,
    shared: std::sync::Weak<Shared>,
    own: std::sync::Weak<Mutex<HashMap<String, Own>>>,
    daemon: ServiceDaemon,
    started: Instant,
    browsing: bool,
) {
    if let Some(state) = shared.upgrade() {
        let window = Window {
            first: FIRST_ANSWER,
            quiet: MIN_QUIET..=QUIET,
            rounds: 2,
            until: started + MdnsRegistry::WARMUP,
        };
        match query::query(&interface_ips(&interfaces), &window, |heard| {
            state.absorb(heard)
        }) {
            Ok(heard) => {
                tracing::debug!(answered = heard.instances.len(), elapsed = ?started.elapsed(), "mDNS start-up query");
            }
            // The nodes already there announce themselves again within 30 s; mdns-sd's
            // browse asks for them now.
            Err(e) => {
                tracing::warn!(error = %e, "mDNS start-up query failed; browsing instead");
                if !browsing {
                    if let Err(e) = browse(&daemon, Arc::clone(&state)) {
                        tracing::warn!(error = %e, "mDNS browse failed too");
                    }
                }
            }
        }
        state.settle();
    }
    loop {
        let Some(state) = shared.upgrade() else {
            return;
        };
        if let Some(own) = own.upgrade() {
            announce_due(&daemon, &own);
        }
        // A node that missed two announcements is asked directly (and dropped when it
        // does not answer); most never are.
        for target in state.gone_quiet() {
            check::enqueue(&state, target);
        }
        state.expire();
        drop(state);
        std::thread::sleep(TICK);
    }
}

impl MdnsRegistry {
    /// The longest a lookup waits, after the registry starts, for the answers to the
    /// queries sent at start (see the module's "Timing"). Lookups wait only while
    /// answers keep coming, usually well under this; after it every lookup is
    /// answered from memory at once.
    pub const WARMUP: Duration = Duration::from_millis(1500);

    /// A registry on all interfaces.
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

    /// What was ignored on the network so far, and what came of suspicions.
    pub fn stats(&self) -> MdnsStats {
        let shared = &self.inner.shared;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        MdnsStats {
            malformed: load(&shared.malformed),
            over_limit: load(&shared.over_limit),
            suspects_asked: load(&shared.suspects_asked),
            quiet_asked: load(&shared.quiet_asked),
            suspects_answered: load(&shared.suspects_answered),
            suspects_dropped: load(&shared.suspects_dropped),
            check_errors: load(&shared.check_errors),
        }
    }

    /// Waits (at most until [`MdnsRegistry::WARMUP`] after start) for the queries
    /// sent at start to be answered.
    async fn warmed_up(&self) {
        let deadline = self.inner.started + Self::WARMUP;
        loop {
            let changed = self.inner.shared.changed.notified();
            if self.inner.shared.is_settled() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    fn service_info(
        service: &Service,
        node: &Node,
        ttl: Option<Duration>,
    ) -> Result<ServiceInfo, Error> {
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
        let pairs = txt::encode(service, node, ttl).map_err(invalid)?;
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
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        crate::validate(service)?;
        for node in &service.nodes {
            let info = Self::service_info(service, node, options.ttl)?;
            let fullname = normalize(info.get_fullname());
            {
                let mut own = lock(&self.inner.own);
                match own.get_mut(&node.id) {
                    // Registered already (a service renews its registration every
                    // interval): announced again on its own schedule, with what this
                    // registration says.
                    Some(known) if known.fullname == fullname => {
                        known.info = info;
                        known.every = announce_every(options.ttl);
                    }
                    _ => {
                        self.inner.daemon.register(info.clone()).map_err(backend)?;
                        own.insert(
                            node.id.clone(),
                            Own {
                                fullname: fullname.clone(),
                                info,
                                every: announce_every(options.ttl),
                                announced: Instant::now(),
                            },
                        );
                    }
                }
            }
            // This process sees its own node at once, without waiting for the loopback echo.
            let one = Service {
                nodes: vec![node.clone()],
                metadata: HashMap::new(),
                ..service.clone()
            };
            self.inner
                .shared
                .upsert(&fullname, one, options.ttl, true, None);
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        for node in &service.nodes {
            let Some(Own { fullname, .. }) = lock(&self.inner.own).remove(&node.id) else {
                continue;
            };
            let escaped = Self::service_info(service, node, None)
                .map(|info| info.get_fullname().to_string())
                .unwrap_or_else(|_| fullname.clone());
            let status = self.inner.daemon.unregister(&escaped).map_err(backend)?;
            // The goodbye is sent by the daemon thread; wait for it (bounded) so that a
            // process that exits right after deregistering has really said goodbye.
            let waited = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
            if !matches!(waited, Ok(Ok(_))) {
                tracing::warn!(node = %node.id, "mDNS goodbye not confirmed within 1s");
            }
            self.inner.shared.goodbye(&fullname);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.warmed_up().await;
        self.inner
            .shared
            .lookup(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.warmed_up().await;
        let names = self.inner.shared.names();
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

    /// Asks `node` directly whether it is alive, in the background; drops it from
    /// this process's view (a Delete event) when it does not answer within
    /// [`SUSPECT_WINDOW`]. Nodes this process registered, nodes it does not know and
    /// nodes already being checked are left alone.
    fn suspect(&self, service: &str, node: &Node) {
        if let Some(target) = self.inner.shared.target(service, &node.id) {
            check::enqueue(&self.inner.shared, target);
        }
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
