//! etcd at size: `ETCD_SCALE_NODES` nodes (default 10,000) of `ETCD_SCALE_SERVICES`
//! services (default 1,000) in go-micro's layout, each key on a lease of its own, on
//! one etcd member this bench starts on loopback ports with a fresh data directory.
//!
//! It reports, in order:
//! - the load: how long the nodes took to write (a lease grant and a put each, from
//!   64 concurrent writers of etcd-client, as a fleet of go-micro services would);
//! - a new `EtcdRegistry` + `CachedRegistry`: time to its first full view (the
//!   service list, then every service looked up through the cache, 16 lookups at a
//!   time) and the growth of this process's RSS for it;
//! - churn: `ETCD_SCALE_CHURN_RATE` nodes/s (default 100) registering and as many
//!   leaving for `ETCD_SCALE_CHURN_SECS` (default 20), through `EtcdRegistry`; the
//!   events per second a watcher receives, and its lag (from the write's
//!   acknowledgement to the event);
//! - a cached lookup (ns) at 10 nodes and at full size;
//! - lease renewals: `ETCD_SCALE_RENEW_NODES` nodes (default 1,000), each with a
//!   registry of its own (one process, one node) and a TTL of
//!   `ETCD_SCALE_RENEW_TTL` s (default 15); keep-alives per second and per node as
//!   etcd counts them, etcd's CPU and syscalls, over `ETCD_SCALE_RENEW_SECS` (20);
//! - a restart of the member under that load (kill -9, start again on the same
//!   directory and ports): when etcd answers, when a watcher sees a new registration,
//!   whether any node was reported gone, and whether every node is still there.
//!
//! Run with `make bench-scale` or `cargo bench -p micro-registry --features etcd
//! --bench etcd_scale` (about 95 s at the defaults). Loopback only; no mDNS.

// A benchmark reports by printing, and fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};
use micro_registry::{
    Action, CachedRegistry, Endpoint, EtcdRegistry, Node, RegisterOptions, Registry, Service, Value,
};

const PREFIX: &str = "/micro/registry/";
/// The TTL of the loaded nodes: longer than the bench, so they need no renewal.
const LOAD_TTL: i64 = 900;
/// Concurrent writers of the load.
const WRITERS: usize = 64;
/// Concurrent lookups of the first full view.
const LOOKERS: usize = 16;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One etcd member on loopback ports; killed, and its data removed, on drop (a
/// panic included).
struct Etcd {
    child: Option<Child>,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    fn start() -> Self {
        let data = std::env::temp_dir().join(format!("etcd-scale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut etcd = Self {
            child: None,
            data,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--name", "scale"])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("scale={peer_url}")])
            .args(["--quota-backend-bytes", "4294967296"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is required (scripts/deps.sh)");
        self.child = Some(child);
    }

    /// kill -9, then the same member again on the same directory and ports.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// etcd's Prometheus metrics, summed by name over the lines that contain `filter`.
    fn metric(&self, name: &str, filter: &str) -> f64 {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.client_port)).expect("etcd metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name)
                    && (filter.is_empty() || l.contains(filter))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// CPU seconds (user + system) of the member so far.
    fn cpu(&self) -> f64 {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// (read syscalls, write syscalls) of the member so far.
    fn syscalls(&self) -> (u64, u64) {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("syscr:"), field("syscw:"))
    }

    fn rss_kib(&self) -> u64 {
        rss_of(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn cpu_of(stat: &str) -> f64 {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_of(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn own_rss_kib() -> u64 {
    rss_of("/proc/self/status")
}

fn service_name(index: usize) -> String {
    format!("go.micro.srv.scale{index:04}")
}

/// A service value as a go-micro service writes it: one node, its metadata, two
/// endpoints.
fn service(index: usize, node_id: &str, address: String) -> Service {
    let mut node = Node::new(node_id, address);
    for (k, v) in [
        ("broker", "http"),
        ("protocol", "grpc"),
        ("registry", "etcd"),
        ("server", "grpc"),
        ("transport", "grpc"),
    ] {
        node.metadata.insert(k.into(), v.into());
    }
    let endpoint = |method: &str| Endpoint {
        name: format!("Scale.{method}"),
        request: Some(Value::new("Request", "Request")),
        response: Some(Value::new("Response", "Response")),
        metadata: HashMap::new(),
    };
    Service::new(service_name(index))
        .version("latest")
        .endpoint(endpoint("Get"))
        .endpoint(endpoint("Put"))
        .node(node)
}

fn node_key(service: &str, node: &str) -> String {
    format!(
        "{PREFIX}{}/{}",
        service.replace('/', "-"),
        node.replace('/', "-")
    )
}

async fn client(address: &str) -> Client {
    Client::connect([address], None).await.unwrap()
}

async fn wait_ready(address: &str, patience: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect([address], None).await {
            if c.get("/ready", None).await.is_ok() {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < patience, "etcd did not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count_keys(address: &str) -> i64 {
    client(address)
        .await
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `nodes` nodes spread over `services` services, one lease per node.
async fn load(address: &str, nodes: usize, services: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let mut client = client(address).await;
        tasks.spawn(async move {
            for i in (writer..nodes).step_by(WRITERS) {
                let index = i % services;
                let id = format!("{}-{i:05}", service_name(index));
                let address = format!("10.{}.{}.{}:50051", i / 65536, (i / 256) % 256, i % 256);
                let value = serde_json::to_vec(&service(index, &id, address)).unwrap();
                let lease = client.lease_grant(LOAD_TTL, None).await.unwrap().id();
                client
                    .put(
                        node_key(&service_name(index), &id),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    start.elapsed()
}

/// Lookups of `names` through `cache`, `LOOKERS` at a time; the nodes seen.
async fn look_up_all(cache: &CachedRegistry, names: &[String]) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for looker in 0..LOOKERS {
        let cache = cache.clone();
        let names: Vec<String> = names
            .iter()
            .skip(looker)
            .step_by(LOOKERS)
            .cloned()
            .collect();
        tasks.spawn(async move {
            let mut nodes = 0;
            for name in names {
                let services = cache.lookup(&name).await.unwrap();
                nodes += services.iter().map(|s| s.nodes.len()).sum::<usize>();
            }
            nodes
        });
    }
    let mut nodes = 0;
    while let Some(done) = tasks.join_next().await {
        nodes += done.unwrap();
    }
    nodes
}

/// ns of a cached lookup of `name`: the median of 7 means of 100,000 lookups.
async fn lookup_ns(cache: &CachedRegistry, name: &str) -> f64 {
    const ROUNDS: u32 = 100_000;
    cache.lookup(name).await.unwrap();
    let mut means = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(cache.lookup(std::hint::black_box(name)).await.unwrap());
        }
        means.push(start.elapsed().as_nanos() as f64 / f64::from(ROUNDS));
    }
    means.sort_by(f64::total_cmp);
    means[3]
}

/// Streams etcd opened and ranges it served so far: (watch streams, keep-alive
/// streams, range reads).
fn opened(etcd: &Etcd) -> [f64; 3] {
    [
        etcd.metric(
            "grpc_server_started_total",
            "grpc_service=\"etcdserverpb.Watch\"",
        ),
        etcd.metric(
            "grpc_server_started_total",
            "grpc_method=\"LeaseKeepAlive\"",
        ),
        etcd.metric("grpc_server_started_total", "grpc_method=\"Range\""),
    ]
}

fn opened_since(before: [f64; 3], etcd: &Etcd, secs: f64) -> String {
    let now = opened(etcd);
    format!(
        "{:.0} watch streams, {:.0} keep-alive streams opened and {:.0} range reads served ({:.1}/s)",
        now[0] - before[0],
        now[1] - before[1],
        now[2] - before[2],
        (now[2] - before[2]) / secs
    )
}

/// When each churn node's events arrived: (action, node id) → instant.
type Arrivals = Arc<Mutex<HashMap<(bool, String), Instant>>>;

/// When each churn write was called and acknowledged: (action, node id) → instants.
type Acks = Arc<Mutex<HashMap<(bool, String), (Instant, Instant)>>>;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let nodes = env("ETCD_SCALE_NODES", 10_000) as usize;
    let services = (env("ETCD_SCALE_SERVICES", 1_000) as usize).clamp(1, nodes.max(1));
    let churn_rate = env("ETCD_SCALE_CHURN_RATE", 100).max(1);
    let churn_secs = env("ETCD_SCALE_CHURN_SECS", 20);
    let renew_nodes = env("ETCD_SCALE_RENEW_NODES", 1_000) as usize;
    let renew_ttl = env("ETCD_SCALE_RENEW_TTL", 15).max(3);
    let renew_secs = env("ETCD_SCALE_RENEW_SECS", 20).max(1);
    let bench_start = Instant::now();

    let mut etcd = Etcd::start();
    let address = etcd.address();
    wait_ready(&address, Duration::from_secs(30)).await;
    println!(
        "etcd {} on {address}: {nodes} nodes of {services} services, one lease each (2 cores shared: single runs, medians where repeated)",
        String::from_utf8_lossy(
            &Command::new("etcd")
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("etcd Version: ")
    );

    // A cached lookup at 10 nodes, before the load.
    let small_name = "go.micro.srv.small";
    let small = EtcdRegistry::new([address.as_str()]).unwrap();
    for i in 0..10 {
        let mut svc = service(0, &format!("small-{i}"), format!("10.9.0.{i}:50051"));
        svc.name = small_name.into();
        small
            .register(&svc, RegisterOptions::default())
            .await
            .unwrap();
    }
    let small_cache = CachedRegistry::new(Arc::new(small.clone()));
    let small_ns = lookup_ns(&small_cache, small_name).await;
    drop(small_cache);

    // The load.
    let loaded = load(&address, nodes, services).await;
    let keys = count_keys(&address).await;
    assert_eq!(keys as usize, nodes + 10, "every node loaded");
    println!(
        "load: {nodes} nodes in {:.1} s, {:.0} nodes/s (lease grant + put each, {WRITERS} writers); etcd RSS {:.0} MiB",
        loaded.as_secs_f64(),
        nodes as f64 / loaded.as_secs_f64(),
        etcd.rss_kib() as f64 / 1024.0
    );

    // A new registry and cache: the first full view.
    let rss_before = own_rss_kib();
    let start = Instant::now();
    let registry = EtcdRegistry::new([address.as_str()]).unwrap();
    let cache = CachedRegistry::new(Arc::new(registry.clone()));
    let mut names: Vec<String> = cache
        .list_services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.dedup();
    let listed = start.elapsed();
    let seen = look_up_all(&cache, &names).await;
    let full_view = start.elapsed();
    let rss_after = own_rss_kib();
    assert_eq!(seen, nodes + 10, "the full view holds every node");
    let rss_growth = rss_after.saturating_sub(rss_before);
    println!(
        "first full view: {:.0} ms ({} services listed in {:.0} ms, then looked up {LOOKERS} at a time); RSS +{:.1} MiB ({:.2} KiB per node)",
        ms(full_view),
        names.len(),
        ms(listed),
        rss_growth as f64 / 1024.0,
        rss_growth as f64 / nodes as f64
    );

    // Cached lookups at full size.
    let full_ns = lookup_ns(&cache, &service_name(0)).await;
    let small_again = lookup_ns(&CachedRegistry::new(Arc::new(small.clone())), small_name).await;
    println!(
        "cached lookup: {small_ns:.0} ns at 10 nodes, {full_ns:.0} ns at {nodes} (a 10-node service), {small_again:.0} ns for the 10-node service beside the {nodes}"
    );

    // Churn, watched.
    let arrivals: Arrivals = Arc::default();
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut watcher = registry.watch(Default::default()).await.unwrap();
    let watching = {
        let arrivals = Arc::clone(&arrivals);
        let events = Arc::clone(&events);
        tokio::spawn(async move {
            loop {
                match watcher.next().await {
                    Ok(event) => {
                        let at = Instant::now();
                        events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        for node in &event.service.nodes {
                            arrivals
                                .lock()
                                .unwrap()
                                .insert((event.action != Action::Delete, node.id.clone()), at);
                        }
                    }
                    Err(micro_registry::Error::Lagged(n)) => {
                        println!("  watcher lagged: {n} events lost");
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let churners: Vec<EtcdRegistry> = (0..8)
        .map(|_| EtcdRegistry::new([address.as_str()]).unwrap())
        .collect();
    let acks: Acks = Arc::default();
    let live = Duration::from_secs(5);
    let total = (churn_rate * churn_secs) as usize;
    let period = Duration::from_secs_f64(1.0 / churn_rate as f64);
    let churn_start = Instant::now();
    let events_before = events.load(std::sync::atomic::Ordering::Relaxed);
    let mut writes = tokio::task::JoinSet::new();
    let mut failures = 0usize;
    for i in 0..total {
        tokio::time::sleep_until((churn_start + period * i as u32).into()).await;
        let registry = churners[i % churners.len()].clone();
        let acks = Arc::clone(&acks);
        let id = format!("churn-{i:06}");
        let svc = service(
            i % services,
            &id,
            format!("10.8.{}.{}:50051", i / 256 % 256, i % 256),
        );
        writes.spawn(async move {
            let options = RegisterOptions::default().ttl(Duration::from_secs(30));
            let sent = Instant::now();
            registry.register(&svc, options).await?;
            acks.lock()
                .unwrap()
                .insert((true, id.clone()), (sent, Instant::now()));
            // Leaves after `live`: from then on as many leave as register each second.
            tokio::time::sleep(live).await;
            let sent = Instant::now();
            registry.deregister(&svc).await?;
            acks.lock()
                .unwrap()
                .insert((false, id), (sent, Instant::now()));
            Ok::<(), micro_registry::Error>(())
        });
        while let Some(done) = writes.try_join_next() {
            failures += usize::from(done.unwrap().is_err());
        }
    }
    while let Some(done) = writes.join_next().await {
        failures += usize::from(done.unwrap().is_err());
    }
    let churned = churn_start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = events.load(std::sync::atomic::Ordering::Relaxed) - events_before;
    // Lag from the ack (zero when the event came first) and from the call.
    let (mut create_lag, mut delete_lag, mut create_call, mut delete_call) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut missing, mut before_ack) = (0usize, 0usize);
    {
        let acks = acks.lock().unwrap();
        let arrivals = arrivals.lock().unwrap();
        for (key, (sent, acked)) in acks.iter() {
            match arrivals.get(key) {
                Some(at) => {
                    before_ack += usize::from(at < acked);
                    let lag = at.saturating_duration_since(*acked);
                    let call = at.saturating_duration_since(*sent);
                    if key.0 {
                        create_lag.push(lag);
                        create_call.push(call);
                    } else {
                        delete_lag.push(lag);
                        delete_call.push(call);
                    }
                }
                None => missing += 1,
            }
        }
    }
    for lags in [
        &mut create_lag,
        &mut delete_lag,
        &mut create_call,
        &mut delete_call,
    ] {
        lags.sort();
    }
    // The cache agrees with etcd afterwards?
    let mut disagree = 0;
    for name in &names {
        let cached: usize = cache
            .lookup(name)
            .await
            .map_or(0, |s| s.iter().map(|s| s.nodes.len()).sum());
        let direct: usize = registry
            .get_service(name)
            .await
            .map_or(0, |s| s.iter().map(|s| s.nodes.len()).sum());
        disagree += usize::from(cached != direct);
    }
    println!(
        "churn: {total} registered and left over {:.1} s ({churn_rate}/s each way, each node lives {} s, 8 registries); {failures} writes failed",
        churned.as_secs_f64(),
        live.as_secs()
    );
    let lags = |name: &str, sorted: &[Duration]| {
        format!(
            "{name} median {:.2} / p99 {:.2} / max {:.2} ms",
            ms(percentile(sorted, 0.5)),
            ms(percentile(sorted, 0.99)),
            ms(percentile(sorted, 1.0))
        )
    };
    println!(
        "  watcher: {received} events, {:.0} events/s; {missing} writes without an event; {before_ack} of {} events arrived before the write's ack; {disagree} services where the cache disagrees with etcd after",
        received as f64 / churned.as_secs_f64(),
        acks.lock().unwrap().len()
    );
    println!(
        "  lag from the ack (0 when first): {}, {}",
        lags("create", &create_lag),
        lags("delete", &delete_lag)
    );
    println!(
        "  lag from the call (register: grant + put; deregister: delete + revoke): {}, {}",
        lags("create", &create_call),
        lags("delete", &delete_call)
    );
    drop(churners);

    // etcd at rest with the loaded nodes, for comparison with the renewal window.
    let rest_secs = renew_secs.min(30);
    let (c0, s0, o0) = (etcd.cpu(), etcd.syscalls(), opened(&etcd));
    tokio::time::sleep(Duration::from_secs(rest_secs)).await;
    let (c1, s1) = (etcd.cpu(), etcd.syscalls());
    let rest_cpu = (c1 - c0) / rest_secs as f64;
    let rest_syscalls = (s1.0 - s0.0 + s1.1 - s0.1) as f64 / rest_secs as f64;
    println!(
        "etcd at rest (the loaded nodes, the watching registry idle, {rest_secs} s): {:.1} % of a core, {rest_syscalls:.0} syscalls/s; {}",
        rest_cpu * 100.0,
        opened_since(o0, &etcd, rest_secs as f64)
    );

    // Lease renewals: one registry (one process) per node.
    let renew_start = Instant::now();
    let mut renewers = Vec::with_capacity(renew_nodes);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..renew_nodes {
        let address = address.clone();
        tasks.spawn(async move {
            let registry = EtcdRegistry::new([address.as_str()]).unwrap();
            let id = format!("renew-{i:05}");
            let svc = service(
                i % services,
                &id,
                format!("10.7.{}.{}:50051", i / 256 % 256, i % 256),
            );
            registry
                .register(
                    &svc,
                    RegisterOptions::default().ttl(Duration::from_secs(renew_ttl)),
                )
                .await
                .unwrap();
            registry
        });
        if tasks.len() >= 32 {
            renewers.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(done) = tasks.join_next().await {
        renewers.push(done.unwrap());
    }
    println!(
        "renewals: {renew_nodes} nodes registered in {:.1} s, TTL {renew_ttl} s, one registry each",
        renew_start.elapsed().as_secs_f64()
    );
    // Let the first renewals start, then count over a window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renewed = |etcd: &Etcd| etcd.metric("etcd_debugging_lease_renewed_total", "");
    let keepalives = |etcd: &Etcd| {
        etcd.metric(
            "grpc_server_msg_received_total",
            "grpc_method=\"LeaseKeepAlive\"",
        )
    };
    let streams = |etcd: &Etcd| {
        etcd.metric(
            "grpc_server_started_total",
            "grpc_method=\"LeaseKeepAlive\"",
        ) - etcd.metric(
            "grpc_server_handled_total",
            "grpc_method=\"LeaseKeepAlive\"",
        )
    };
    let (r0, k0, c0, s0, own0) = (
        renewed(&etcd),
        keepalives(&etcd),
        etcd.cpu(),
        etcd.syscalls(),
        cpu_of("/proc/self/stat"),
    );
    let o0 = opened(&etcd);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(renew_secs)).await;
    println!(
        "  over the window: {}",
        opened_since(o0, &etcd, window.elapsed().as_secs_f64())
    );
    let secs = window.elapsed().as_secs_f64();
    let (r1, k1, c1, s1, own1) = (
        renewed(&etcd),
        keepalives(&etcd),
        etcd.cpu(),
        etcd.syscalls(),
        cpu_of("/proc/self/stat"),
    );
    let per_node = |x: f64| x / secs / renew_nodes.max(1) as f64;
    println!(
        "  over {secs:.0} s: {:.0} renewals/s ({:.3}/s per node; TTL/3 would be {:.3}), {:.0} keep-alive messages/s, {} keep-alive streams open",
        (r1 - r0) / secs,
        per_node(r1 - r0),
        3.0 / renew_ttl as f64,
        (k1 - k0) / secs,
        streams(&etcd)
    );
    println!(
        "  etcd: {:.1} % of a core ({:.1} µs CPU per node per second above rest), {:.0} read + {:.0} write syscalls/s ({:.2}/s per node above rest), RSS {:.0} MiB; this process (every registry): {:.1} % of a core, RSS {:.0} MiB",
        (c1 - c0) / secs * 100.0,
        ((c1 - c0) / secs - rest_cpu) * 1e6 / renew_nodes.max(1) as f64,
        (s1.0 - s0.0) as f64 / secs,
        (s1.1 - s0.1) as f64 / secs,
        ((s1.0 - s0.0 + s1.1 - s0.1) as f64 / secs - rest_syscalls) / renew_nodes.max(1) as f64,
        etcd.rss_kib() as f64 / 1024.0,
        (own1 - own0) / secs * 100.0,
        own_rss_kib() as f64 / 1024.0
    );

    // A restart of the member under that load.
    let expected = count_keys(&address).await;
    let deletes_before: usize = arrivals.lock().unwrap().keys().filter(|k| !k.0).count();
    let creates_before = events.load(std::sync::atomic::Ordering::Relaxed);
    let probe = EtcdRegistry::new([address.as_str()]).unwrap();
    let killed = Instant::now();
    etcd.kill();
    etcd.spawn();
    wait_ready(&address, Duration::from_secs(60)).await;
    let answered = killed.elapsed();
    // A registration after the restart: when the watcher sees it, the watch is back.
    let probe_svc = service(0, "probe-after-restart", "10.6.0.1:50051".into());
    loop {
        if probe
            .register(
                &probe_svc,
                RegisterOptions::default().ttl(Duration::from_secs(60)),
            )
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no registration after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let watch_back = loop {
        if let Some(at) = arrivals
            .lock()
            .unwrap()
            .get(&(true, "probe-after-restart".to_string()))
        {
            break at.duration_since(killed);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the watch did not come back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Past a full renewal TTL: every renewer must still hold its key.
    tokio::time::sleep(Duration::from_secs(renew_ttl + 2)).await;
    let after = count_keys(&address).await;
    let deletes_after: usize = arrivals.lock().unwrap().keys().filter(|k| !k.0).count();
    let events_during = events.load(std::sync::atomic::Ordering::Relaxed) - creates_before;
    let mut cache_nodes = 0;
    for name in &names {
        cache_nodes += cache
            .lookup(name)
            .await
            .map_or(0, |s| s.iter().map(|s| s.nodes.len()).sum::<usize>());
    }
    println!(
        "restart (kill -9, same directory and ports): etcd answered after {:.0} ms, the watcher saw a new registration after {:.0} ms; keys {expected} before, {after} after {} s (probe included); {} nodes reported gone, {events_during} watch events in all; cache holds {cache_nodes} nodes",
        ms(answered),
        ms(watch_back),
        renew_ttl + 2,
        deletes_after - deletes_before,
    );

    watching.abort();
    drop(renewers);
    println!("bench took {:.0} s", bench_start.elapsed().as_secs_f64());
}
