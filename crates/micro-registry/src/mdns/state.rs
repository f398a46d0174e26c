//! What one registry knows about the nodes on the network, and how it learns it:
//! from legacy unicast queries, from the announcements and goodbyes heard by the
//! passive listener (or, where it cannot listen, from mdns-sd's browse), and from
//! asking suspected nodes directly. Every change is
//! published to watchers in order.
//!
//! Only the network itself removes a remote node: its goodbye, its silence for its
//! whole TTL, or its silence when asked directly. When mdns-sd drops an instance
//! (`ServiceRemoved`) the node is asked, not forgotten: mdns-sd also drops every
//! instance it knows when its interface check fails, which happens when the process
//! runs out of file descriptors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceEvent, TxtProperty};
use tokio::sync::Notify;

use super::check::{self, Checks, Target};
use super::query::Asked;
use super::{MAX_INSTANCES, MdnsInterfaces, query, txt};
use crate::registry::WatchHub;
use crate::{Action, Service};

/// How long after a goodbye stale answers for the same instance are ignored.
const TOMBSTONE: Duration = Duration::from_secs(3);
/// The part of its TTL a remote node may stay silent before it is asked directly.
const QUIET_AFTER: f64 = 0.8;
/// Time left in a quiet node's TTL when it is asked at the latest: two ticks of the
/// registry's thread (one to notice, one to expire) and the time an answer may take.
const ASK_MARGIN: Duration = Duration::from_millis(
    2 * super::TICK.as_millis() as u64 + super::SUSPECT_WINDOW.as_millis() as u64,
);

#[derive(Debug)]
pub(super) struct Shared {
    cache: Mutex<Cache>,
    pub(super) changed: Notify,
    pub(super) hub: WatchHub,
    pub(super) malformed: AtomicU64,
    pub(super) over_limit: AtomicU64,
    /// Suspected nodes asked whether they are alive, and what came of it.
    pub(super) suspects_asked: AtomicU64,
    /// Nodes asked because they had gone quiet.
    pub(super) quiet_asked: AtomicU64,
    pub(super) suspects_answered: AtomicU64,
    pub(super) suspects_dropped: AtomicU64,
    pub(super) check_errors: AtomicU64,
    /// Instances already counted as malformed (each is counted once).
    malformed_seen: Mutex<HashSet<String>>,
    default_ttl: Duration,
    /// The interfaces queries are sent on.
    pub(super) interfaces: MdnsInterfaces,
    /// Suspected nodes waiting to be asked, or being asked.
    pub(super) checks: Mutex<Checks>,
    /// Set once the queries sent at start have been answered (or given up on).
    settled: AtomicBool,
}

#[derive(Debug, Default)]
struct Cache {
    /// service name -> node id -> node.
    services: HashMap<String, BTreeMap<String, Known>>,
    /// instance full name (normalized) -> (service name, node id).
    index: HashMap<String, (String, String)>,
    /// instance full name -> when its goodbye was heard.
    gone: HashMap<String, Instant>,
}

#[derive(Debug, Clone)]
struct Known {
    /// The node as a one-node service.
    service: Service,
    /// Its instance's full name (normalized).
    fullname: String,
    /// The host its SRV record names, when known (to ask it directly).
    host: Option<String>,
    /// Registered by this process: never expires here.
    own: bool,
    /// Forgotten when not heard from for this long.
    ttl: Duration,
    last_seen: Instant,
    /// When it was last asked directly because it had gone quiet.
    asked: Option<Instant>,
}

/// mdns-sd writes dots inside the instance label as `\.` and ends names with a dot;
/// names parsed off the wire have neither. All forms name the same instance.
pub(super) fn normalize(fullname: &str) -> String {
    let mut name = fullname.replace("\\.", ".");
    if !name.ends_with('.') {
        name.push('.');
    }
    name
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
    removed.map(|k| k.service)
}

impl Shared {
    pub(super) fn new(default_ttl: Duration, interfaces: MdnsInterfaces) -> Self {
        Self {
            cache: Mutex::new(Cache::default()),
            changed: Notify::new(),
            hub: WatchHub::new(),
            malformed: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            suspects_asked: AtomicU64::new(0),
            quiet_asked: AtomicU64::new(0),
            suspects_answered: AtomicU64::new(0),
            suspects_dropped: AtomicU64::new(0),
            check_errors: AtomicU64::new(0),
            malformed_seen: Mutex::new(HashSet::new()),
            default_ttl,
            interfaces,
            checks: Mutex::new(Checks::default()),
            settled: AtomicBool::new(false),
        }
    }

    /// The queries sent at start are done: lookups answer from memory from now on.
    pub(super) fn settle(&self) {
        self.settled.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Whether the queries sent at start are done.
    pub(super) fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Handles one event of mdns-sd's browse.
    pub(super) fn on_event(self: &Arc<Self>, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                let pairs = resolved
                    .get_properties()
                    .iter()
                    .map(|p: &TxtProperty| (p.key(), p.val()));
                let addrs: Vec<std::net::IpAddr> = resolved
                    .get_addresses()
                    .iter()
                    .map(|a| a.to_ip_addr())
                    .collect();
                match (
                    txt::decode(pairs),
                    query::pick_address(&addrs, resolved.port),
                ) {
                    (Ok(decoded), Some(address)) => {
                        let ttl = decoded.ttl;
                        self.upsert(
                            &resolved.fullname,
                            decoded.into_service(address.to_string()),
                            ttl,
                            false,
                            Some(resolved.get_hostname()),
                        );
                    }
                    (Err(e), _) => self.count_malformed(&resolved.fullname, &e.to_string()),
                    (_, None) => self.count_malformed(&resolved.fullname, "no address"),
                }
            }
            // Not a goodbye: mdns-sd reports this for a goodbye (which the passive
            // listener has usually acted on already), for records that expired in its
            // own cache, and for every instance it knows when its interface check
            // fails (the process is out of file descriptors, say). Ask the node: it is
            // dropped only if it does not answer, and kept if it cannot be asked.
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Some(target) = self.target_of_instance(&fullname) {
                    tracing::debug!(instance = %fullname, "mDNS daemon dropped an instance; asking it");
                    check::enqueue(self, target);
                }
            }
            _ => {}
        }
    }

    fn count_malformed(&self, instance: &str, why: &str) {
        let mut seen = lock(&self.malformed_seen);
        if seen.len() < MAX_INSTANCES && seen.insert(normalize(instance)) {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(instance, why, "ignoring malformed mDNS instance");
        }
    }

    /// Records a node; publishes Create or Update when it is new or changed. `host`
    /// is the host its SRV record names, when heard. A node registered by this process
    /// stays its own when its echo comes back from the network.
    pub(super) fn upsert(
        &self,
        fullname: &str,
        service: Service,
        ttl: Option<Duration>,
        own: bool,
        host: Option<&str>,
    ) {
        let fullname = normalize(fullname);
        let Some(id) = service.nodes.first().map(|n| n.id.clone()) else {
            return;
        };
        let key = (service.name.clone(), id.clone());
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut cache = lock(&self.cache);
            if !own {
                cache
                    .gone
                    .retain(|_, at| now.duration_since(*at) < TOMBSTONE);
                if cache.gone.contains_key(&fullname) {
                    // A late answer for a node that said goodbye.
                    return;
                }
            } else {
                cache.gone.remove(&fullname);
            }
            if !cache.index.contains_key(&fullname) && cache.index.len() >= MAX_INSTANCES {
                self.over_limit.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The same instance now describing another node or service: the old one left.
            if let Some(old) = cache.index.insert(fullname.clone(), key.clone()) {
                if old != key {
                    if let Some(gone) = remove_node(&mut cache, &old) {
                        events.push((Action::Delete, gone));
                    }
                }
            }
            let nodes = cache.services.entry(key.0.clone()).or_default();
            let before = nodes.get(&id);
            let known = Known {
                service: service.clone(),
                fullname,
                host: host
                    .map(normalize)
                    .or_else(|| before.and_then(|k| k.host.clone())),
                own: own || before.is_some_and(|k| k.own),
                ttl: ttl.unwrap_or(self.default_ttl),
                last_seen: now,
                asked: None,
            };
            match nodes.insert(id, known) {
                None => events.push((Action::Create, service)),
                Some(previous) if previous.service != service => {
                    events.push((Action::Update, service))
                }
                Some(_) => {}
            }
        }
        self.publish(events);
    }

    /// Marks an instance as alive without changing it.
    pub(super) fn seen(&self, fullname: &str) {
        let fullname = normalize(fullname);
        let mut cache = lock(&self.cache);
        let Some((name, id)) = cache.index.get(&fullname).cloned() else {
            return;
        };
        if let Some(known) = cache.services.get_mut(&name).and_then(|m| m.get_mut(&id)) {
            known.last_seen = Instant::now();
        }
    }

    /// The instance said goodbye (or this process deregistered it): forget it now, and
    /// ignore stale answers about it for a few seconds.
    pub(super) fn goodbye(&self, fullname: &str) {
        let fullname = normalize(fullname);
        let removed = {
            let mut cache = lock(&self.cache);
            cache.gone.insert(fullname.clone(), Instant::now());
            let Some(key) = cache.index.remove(&fullname) else {
                return;
            };
            remove_node(&mut cache, &key)
        };
        if let Some(service) = removed {
            self.publish(vec![(Action::Delete, service)]);
        }
    }

    /// What to ask to check on remote node `node_id` of `service`; `None` for a node
    /// this registry does not know, or registered itself.
    pub(super) fn target(&self, service: &str, node_id: &str) -> Option<Target> {
        let cache = lock(&self.cache);
        let known = cache.services.get(service)?.get(node_id)?;
        Self::target_of(known, (service.to_string(), node_id.to_string()))
    }

    /// Like [`Shared::target`], by instance full name.
    fn target_of_instance(&self, fullname: &str) -> Option<Target> {
        let cache = lock(&self.cache);
        let key = cache.index.get(&normalize(fullname))?;
        let known = cache.services.get(&key.0)?.get(&key.1)?;
        Self::target_of(known, key.clone())
    }

    fn target_of(known: &Known, key: (String, String)) -> Option<Target> {
        (!known.own).then(|| Target {
            asked: Asked {
                fullname: known.fullname.clone(),
                host: known.host.clone(),
            },
            key,
            suspected: true,
        })
    }

    /// Forgets the node `target` names when it is still the node known under that
    /// instance and nothing was heard from it since `since` (it was asked then and did
    /// not answer). Publishes Delete; returns whether it was forgotten.
    pub(super) fn forget_if_silent(&self, target: &Target, since: Instant) -> bool {
        let fullname = &target.asked.fullname;
        let removed = {
            let mut cache = lock(&self.cache);
            if cache.index.get(fullname) != Some(&target.key) {
                return false;
            }
            let silent = cache
                .services
                .get(&target.key.0)
                .and_then(|m| m.get(&target.key.1))
                .is_some_and(|k| !k.own && k.last_seen <= since);
            if !silent {
                return false;
            }
            cache.index.remove(fullname);
            remove_node(&mut cache, &target.key)
        };
        match removed {
            Some(service) => {
                tracing::debug!(service = %service.name, node = %target.key.1, "suspected mDNS node did not answer; dropped");
                self.publish(vec![(Action::Delete, service)]);
                true
            }
            None => false,
        }
    }

    /// Forgets remote nodes not heard from within their TTL.
    pub(super) fn expire(&self) {
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut cache = lock(&self.cache);
            let expired: Vec<(String, (String, String))> = cache
                .index
                .iter()
                .filter(|(_, (name, id))| {
                    cache
                        .services
                        .get(name)
                        .and_then(|m| m.get(id))
                        .is_some_and(|k| !k.own && now.duration_since(k.last_seen) > k.ttl)
                })
                .map(|(f, k)| (f.clone(), k.clone()))
                .collect();
            for (fullname, key) in expired {
                cache.index.remove(&fullname);
                if let Some(service) = remove_node(&mut cache, &key) {
                    tracing::debug!(service = %service.name, node = %key.1, "mDNS node expired");
                    events.push((Action::Delete, service));
                }
            }
        }
        self.publish(events);
    }

    /// Remote nodes that have gone quiet: not heard from for [`QUIET_AFTER`] of their
    /// TTL, which is two announcements missed (nodes announce themselves every third
    /// of their TTL), or [`ASK_MARGIN`] before it ends when that comes first, and not
    /// asked about in the last tenth of it. Each is marked as
    /// asked; the caller asks it (see `check`). One that does not answer is not
    /// dropped for it (a busy host may answer late): it expires by its TTL, and is
    /// asked again meanwhile.
    pub(super) fn gone_quiet(&self) -> Vec<Target> {
        let now = Instant::now();
        let mut quiet = Vec::new();
        let mut cache = lock(&self.cache);
        let cache = &mut *cache;
        for (name, nodes) in &mut cache.services {
            for (id, known) in nodes.iter_mut() {
                let silent_for = now.duration_since(known.last_seen);
                let asked_lately = known
                    .asked
                    .is_some_and(|at| now.duration_since(at) < known.ttl / 10);
                // A short TTL leaves announcements no room (they are at least 2 s
                // apart): ask early enough that the answer can come before it ends.
                let ask_after = known
                    .ttl
                    .mul_f64(QUIET_AFTER)
                    .min(known.ttl.saturating_sub(ASK_MARGIN));
                if known.own || asked_lately || silent_for < ask_after {
                    continue;
                }
                known.asked = Some(now);
                if let Some(mut target) = Self::target_of(known, (name.clone(), id.clone())) {
                    target.suspected = false;
                    quiet.push(target);
                }
            }
        }
        quiet
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

    /// Feeds what a legacy unicast query heard since the last call into the cache.
    pub(super) fn absorb(&self, heard: &mut query::Heard) {
        let malformed = std::mem::take(&mut heard.malformed);
        if malformed > 0 {
            self.malformed.fetch_add(malformed, Ordering::Relaxed);
        }
        for name in heard.take_changed() {
            let Some(answer) = heard.resolved(&name) else {
                continue;
            };
            let pairs = answer
                .txt
                .iter()
                .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, v.as_deref())));
            match (
                txt::decode(pairs),
                query::pick_address(answer.addrs, answer.port),
            ) {
                (Ok(decoded), Some(address)) => {
                    let ttl = decoded.ttl;
                    self.upsert(
                        answer.fullname,
                        decoded.into_service(address.to_string()),
                        ttl,
                        false,
                        Some(answer.host),
                    );
                }
                _ => self.count_malformed(answer.fullname, "bad records in a query answer"),
            }
        }
    }

    /// Every version of `name`, with its nodes.
    pub(super) fn lookup(&self, name: &str) -> Option<Vec<Service>> {
        let cache = lock(&self.cache);
        let nodes = cache.services.get(name)?;
        let mut versions: BTreeMap<&str, Service> = BTreeMap::new();
        for known in nodes.values() {
            let one = &known.service;
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

    /// Every known service name.
    pub(super) fn names(&self) -> Vec<String> {
        lock(&self.cache).services.keys().cloned().collect()
    }
}
