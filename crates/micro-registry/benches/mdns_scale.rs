//! mDNS at size: `NODES` nodes (two per service), each a process of its own with its
//! own registry, on loopback inside the private network namespace. For each size it
//! reports how long a new registry takes to know every node, the traffic at rest
//! (multicast and unicast, packets and bytes per second, from the namespace's own
//! counters), the idle CPU and RSS of one node, and how long after a storm (20 nodes
//! stopped and 20 new ones started at once) three watching registries agree again.
//!
//! Run with `make bench-scale` (it needs `scripts/in-netns`: the counters must be the
//! namespace's, and mDNS must not leave the machine). `MDNS_SCALE_SIZES=20,50` picks
//! the sizes, `MDNS_SCALE_REST` the seconds at rest (default 35: one full period of
//! the registries' announcements, a third of the TTL and at most 30 s). "At rest"
//! starts `MDNS_SCALE_SETTLE` seconds (default 3) after the fresh registries'
//! lookups, so by default it still holds mdns-sd's browse repeats (1, 3, 7, 15, ... s
//! after each daemon starts, the gap doubling up to an hour); `MDNS_SCALE_SETTLE=135`
//! measures between the repeats at 127 and 255 s, the steady state.
//!
//! A node here is a registry that registers one node and answers for it; a service's
//! mDNS cost is its registry's, since the rest of a service does not speak mDNS.

// A benchmark reports by printing, and fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use micro_registry::{MdnsRegistry, Node, RegisterOptions, Registry, Service};

const PREFIX: &str = "go.micro.srv.scale";
/// Nodes stopped and started at once in the storm.
const STORM: usize = 20;
/// Fresh registries timed per size.
const FRESH: usize = 5;
/// The longest anything is waited for.
const PATIENCE: Duration = Duration::from_secs(120);

fn loopback() -> MdnsRegistry {
    MdnsRegistry::builder().loopback_only().build().unwrap()
}

fn service(index: usize, id: &str, port: u16) -> Service {
    let mut node = Node::new(id, format!("127.0.0.1:{port}"));
    node.metadata.insert("protocol".into(), "grpc".into());
    Service::new(format!("{PREFIX}{index}"))
        .version("latest")
        .node(node)
}

/// Child mode: registers one node, says READY, and deregisters when stdin closes.
fn node_main(index: usize, id: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = loopback();
        let service = service(index, id, port);
        registry
            .register(&service, RegisterOptions::default())
            .await
            .unwrap();
        println!("READY");
        std::io::stdout().flush().unwrap();
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
        let _ = registry.deregister(&service).await;
    });
}

/// One node process.
struct NodeProcess {
    id: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl NodeProcess {
    fn spawn(index: usize, id: String, port: u16) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--node", &index.to_string(), &id, &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Self { id, child, stdin }
    }

    fn wait_ready(&mut self) {
        let mut lines = BufReader::new(self.child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(line)) if line == "READY" => {}
            other => panic!("node {} did not start: {other:?}", self.id),
        }
    }

    /// Closes stdin (the node deregisters) and waits for the process.
    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// utime + stime in clock ticks, and RSS in KiB.
    fn usage(&self) -> (u64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        let cpu = ticks(11) + ticks(12);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (cpu, rss)
    }
}

/// The namespace's UDP and multicast counters.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    udp_out: u64,
    mcast_out: u64,
    mcast_out_bytes: u64,
    out_bytes: u64,
    rcvbuf_errors: u64,
}

fn traffic() -> Traffic {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let field = |text: &str, table: &str, name: &str| -> u64 {
        let mut lines = text.lines().filter(|l| l.starts_with(table));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let lo_out_bytes = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .and_then(|l| l.split_whitespace().nth(9).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    Traffic {
        udp_out: field(&snmp, "Udp:", "OutDatagrams"),
        mcast_out: field(&netstat, "IpExt:", "OutMcastPkts"),
        mcast_out_bytes: field(&netstat, "IpExt:", "OutMcastOctets"),
        out_bytes: lo_out_bytes,
        rcvbuf_errors: field(&snmp, "Udp:", "RcvbufErrors"),
    }
}

/// Every node id `registry` knows under the bench's services.
async fn known(registry: &MdnsRegistry) -> HashSet<String> {
    let mut ids = HashSet::new();
    for listed in registry.list_services().await.unwrap_or_default() {
        if !listed.name.starts_with(PREFIX) {
            continue;
        }
        for service in registry.get_service(&listed.name).await.unwrap_or_default() {
            ids.extend(service.nodes.into_iter().map(|n| n.id));
        }
    }
    ids
}

/// Waits until every registry in `registries` knows exactly `want`; returns how long
/// that took, or `None` after [`PATIENCE`].
async fn converge(registries: &[&MdnsRegistry], want: &HashSet<String>) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let mut all = true;
        for registry in registries {
            if &known(registry).await != want {
                all = false;
                break;
            }
        }
        if all {
            return Some(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn size(nodes: usize, settle: Duration, rest: Duration, next_port: &mut u16) {
    let tick = 100.0; // USER_HZ on Linux
    let mut serial = 0usize;
    let mut spawn = |index: usize, next_port: &mut u16| {
        serial += 1;
        *next_port += 1;
        NodeProcess::spawn(
            index,
            format!("{PREFIX}{index}-{}-{serial}", std::process::id()),
            *next_port,
        )
    };
    let started = Instant::now();
    let mut procs: Vec<NodeProcess> = (0..nodes).map(|i| spawn(i / 2, next_port)).collect();
    for p in &mut procs {
        p.wait_ready();
    }
    let spawned = started.elapsed();
    let want: HashSet<String> = procs.iter().map(|p| p.id.clone()).collect();

    let witness = loopback();
    let Some(seen) = converge(&[&witness], &want).await else {
        panic!("a registry did not see all {nodes} nodes within {PATIENCE:?}");
    };

    // A new registry's time to know every node.
    let mut fresh = Vec::new();
    for _ in 0..FRESH {
        let started = Instant::now();
        let registry = loopback();
        let took = converge(&[&registry], &want).await.expect("fresh registry");
        fresh.push(started.elapsed().max(took));
    }

    // At rest: no registration changes for a while, then the counters.
    tokio::time::sleep(settle).await;
    let before = traffic();
    let cpu_before: Vec<u64> = procs.iter().map(|p| p.usage().0).collect();
    tokio::time::sleep(rest).await;
    let after = traffic();
    let usage: Vec<(u64, u64)> = procs.iter().map(NodeProcess::usage).collect();
    let secs = rest.as_secs_f64();
    let cpu: Vec<f64> = usage
        .iter()
        .zip(&cpu_before)
        .map(|((now, _), then)| (now - then) as f64 / tick / secs * 100.0)
        .collect();
    let cpu_mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let cpu_max = cpu.iter().cloned().fold(0.0, f64::max);
    let rss_mean = usage.iter().map(|(_, rss)| *rss as f64).sum::<f64>() / usage.len() as f64;
    let per_s = |a: u64, b: u64| (a - b) as f64 / secs;
    let mcast = per_s(after.mcast_out, before.mcast_out);
    let mcast_bytes = per_s(after.mcast_out_bytes, before.mcast_out_bytes);
    let unicast = per_s(after.udp_out, before.udp_out) - mcast;
    let bytes = per_s(after.out_bytes, before.out_bytes);

    // The storm: STORM nodes leave and as many new ones start, all at once.
    let watchers = [loopback(), loopback()];
    let mut want_now = want.clone();
    for w in &watchers {
        converge(&[w], &want).await.expect("watcher");
    }
    let storm = STORM.min(nodes / 2);
    let leaving: Vec<NodeProcess> = procs.drain(..storm).collect();
    let started = Instant::now();
    let mut arriving: Vec<NodeProcess> = (0..storm).map(|i| spawn(i / 2, next_port)).collect();
    let stoppers: Vec<_> = leaving
        .into_iter()
        .map(|p| {
            want_now.remove(&p.id);
            std::thread::spawn(move || p.stop())
        })
        .collect();
    for p in &mut arriving {
        p.wait_ready();
        want_now.insert(p.id.clone());
    }
    for s in stoppers {
        let _ = s.join();
    }
    let storm_took = converge(&[&witness, &watchers[0], &watchers[1]], &want_now)
        .await
        .map(|d| started.elapsed().max(d));
    procs.extend(arriving);
    let rcvbuf = traffic().rcvbuf_errors - before.rcvbuf_errors;

    println!(
        "| {nodes} | {:.0} | {:.1} | {:.1} / {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} | {:.1} | {} | {rcvbuf} |",
        ms(spawned),
        ms(seen),
        ms(median(fresh.clone())),
        ms(*fresh.iter().max().unwrap()),
        mcast,
        mcast_bytes,
        unicast,
        bytes,
        cpu_mean,
        cpu_max,
        rss_mean / 1024.0,
        storm_took.map_or("not within 120 s".to_string(), |d| format!("{:.0}", ms(d))),
    );

    let stoppers: Vec<_> = procs
        .into_iter()
        .map(|p| std::thread::spawn(move || p.stop()))
        .collect();
    for s in stoppers {
        let _ = s.join();
    }
    // Let goodbyes pass before the next size.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let index = args[i + 1].parse().unwrap();
        let port = args[i + 3].parse().unwrap();
        return node_main(index, &args[i + 2], port);
    }
    let sizes: Vec<usize> = std::env::var("MDNS_SCALE_SIZES")
        .unwrap_or_else(|_| "20,50,100,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rest = Duration::from_secs(
        std::env::var("MDNS_SCALE_REST")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(35),
    );
    let settle = Duration::from_secs(
        std::env::var("MDNS_SCALE_SETTLE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "mDNS at size: nodes in separate processes (two per service), loopback, private namespace; at rest over {} s, from {} s after the fresh registries",
        rest.as_secs(),
        settle.as_secs()
    );
    println!();
    println!(
        "| nodes | spawn all (ms) | a registry sees all (ms) | new registry knows all, median / max of {FRESH} (ms) | multicast out (pkt/s) | multicast out (B/s) | unicast UDP out (pkt/s) | loopback out (B/s) | idle CPU of one node, mean / max (% of a core) | RSS of one node (MiB) | storm of {STORM}: watchers agree after (ms) | receive buffer drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        let mut next_port = 30000u16;
        for nodes in sizes {
            size(nodes, settle, rest, &mut next_port).await;
        }
    });
}
