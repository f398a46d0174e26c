//! Discovery speed: how long until a registration is visible to another process, and
//! a deregistration gone; how long a new process takes to find a running service; what
//! a cached lookup costs. Run with `make bench` (inside a private network namespace,
//! mDNS on loopback only).
//!
//! Cross-process times are measured with the wall clock, which both processes share:
//! the registering process prints when it registered, the watching one notes when the
//! event arrived.

// A benchmark reports by printing, and fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use micro_registry::{
    Action, CachedRegistry, MdnsRegistry, MemoryRegistry, Node, RegisterOptions, Registry, Service,
    WatchOptions,
};

const RUNS: usize = 25;
const NAME: &str = "go.micro.srv.bench";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn node(i: usize) -> Service {
    let mut node = Node::new(
        format!("{NAME}-{}-{i}", std::process::id()),
        format!("127.0.0.1:{}", 20000 + i),
    );
    node.metadata.insert("protocol".into(), "grpc".into());
    Service::new(NAME).version("latest").node(node)
}

fn loopback() -> MdnsRegistry {
    MdnsRegistry::builder().loopback_only().build().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(what: &str, v: Vec<Duration>) {
    let (min, max) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
    let n = v.len();
    println!(
        "| {what} | {n} | {:.3} | {:.3} | {:.3} |",
        ms(median(v)),
        ms(min),
        ms(max)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Child mode: registers and deregisters on command, printing wall-clock times.
async fn serve() {
    let registry = loopback();
    let stdin = BufReader::new(std::io::stdin());
    let mut out = std::io::stdout();
    for line in stdin.lines() {
        let line = line.unwrap();
        let (cmd, i) = line.split_once(' ').unwrap();
        let svc = node(i.parse().unwrap());
        match cmd {
            "reg" => {
                let at = now_ns();
                registry
                    .register(&svc, RegisterOptions::default())
                    .await
                    .unwrap();
                writeln!(out, "{at}").unwrap();
            }
            _ => {
                let at = now_ns();
                registry.deregister(&svc).await.unwrap();
                writeln!(out, "{at}").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

async fn mdns_cross_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let watcher_registry = loopback();
    let mut watcher = watcher_registry
        .watch(WatchOptions::service(NAME))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (mut visible, mut gone) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        for (cmd, action, into) in [
            ("reg", Action::Create, &mut visible),
            ("dereg", Action::Delete, &mut gone),
        ] {
            writeln!(to_child, "{cmd} {i}").unwrap();
            to_child.flush().unwrap();
            let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
                .await
                .unwrap()
                .unwrap();
            let seen = now_ns();
            let sent: u128 = from_child.next().unwrap().unwrap().parse().unwrap();
            assert_eq!(event.action, action);
            into.push(Duration::from_nanos((seen.saturating_sub(sent)) as u64));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(to_child);
    let _ = child.wait();
    report("mDNS register -> visible in another process", visible);
    report("mDNS deregister -> gone in another process", gone);
}

async fn mdns_new_client() {
    let server = loopback();
    let mut times = Vec::new();
    for i in 0..RUNS {
        let svc = node(100 + i);
        server
            .register(&svc, RegisterOptions::default())
            .await
            .unwrap();
        // A client started right after the service: a new registry, then lookups.
        let started = Instant::now();
        let client = loopback();
        let mut looked = 0;
        loop {
            let found = client.get_service(NAME).await.unwrap_or_default();
            if found
                .iter()
                .flat_map(|s| &s.nodes)
                .any(|n| n.id == svc.nodes[0].id)
            {
                break;
            }
            looked += 1;
            assert!(looked < 5000, "never found");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed());
        server.deregister(&svc).await.unwrap();
        drop(client);
    }
    report(
        "mDNS new client finds a service registered just before",
        times,
    );
}

async fn memory_watch() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::service(NAME)).await.unwrap();
    let (mut visible, mut gone) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let svc = node(200 + i);
        let t = Instant::now();
        registry
            .register(&svc, RegisterOptions::default())
            .await
            .unwrap();
        watcher.next().await.unwrap();
        visible.push(t.elapsed());
        let t = Instant::now();
        registry.deregister(&svc).await.unwrap();
        watcher.next().await.unwrap();
        gone.push(t.elapsed());
    }
    report("memory register -> visible to a watcher", visible);
    report("memory deregister -> gone for a watcher", gone);
}

async fn cached_lookup() {
    let backend = Arc::new(MemoryRegistry::new());
    for i in 0..3 {
        backend
            .register(&node(300 + i), RegisterOptions::default())
            .await
            .unwrap();
    }
    let cache = CachedRegistry::new(backend);
    cache.lookup(NAME).await.unwrap();
    const N: u32 = 1_000_000;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(cache.cached(std::hint::black_box(NAME)));
        }
        samples.push(t.elapsed() / N);
    }
    let sync = median(samples);
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(cache.lookup(std::hint::black_box(NAME)).await.unwrap());
        }
        samples.push(t.elapsed() / N);
    }
    let lookup = median(samples);
    println!();
    println!("| cached lookup | ns per call (median of 5 x 1M) |");
    println!("|---|---|");
    println!("| `CachedRegistry::cached` | {} |", sync.as_nanos());
    println!(
        "| `CachedRegistry::lookup` (async, hit) | {} |",
        lookup.as_nanos()
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve().await;
    }
    println!("| discovery | runs | median ms | min ms | max ms |");
    println!("|---|---|---|---|---|");
    mdns_cross_process().await;
    mdns_new_client().await;
    memory_watch().await;
    cached_lookup().await;
}
