//! Cold start (issue 18, point 4): from spawning the release `vessel` example to its
//! node in the registry and its first answer to `VesselService.FindAvailable`, on
//! mDNS and on etcd. Run with `make bench-scale` (see BENCHMARKS.md), inside the
//! private network namespace: mDNS never leaves it, etcd listens on loopback.
//!
//! The measurer is this process, not the `micro` command: it holds one registry
//! (the same kind as the vessel's) and its watch from before the spawn, so a run
//! times the vessel's start, registration and first answer, and not the warm-up of
//! a fresh measurer (`micro services` on mDNS spends about 200 ms in its own query).
//! When the watch shows the new node, the call goes to that node only, through a
//! client whose registry is a memory registry holding it: no lookup in the timing.
//!
//! Needs `cargo build --release --example vessel --features etcd` (the vessel must
//! know etcd), found next to this bench's executable.

// A benchmark reports by printing, and fails by panicking on its own setup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{
    Action, MemoryRegistry, RegisterOptions, Registry, RegistryConfig, WatchOptions, Watcher,
};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Request};

const NAME: &str = "go.micro.srv.vessel";
const METHOD: &str = "/go.micro.srv.vessel.VesselService/FindAvailable";
/// Runs per registry; `COLDSTART_RUNS` changes it.
const RUNS: usize = 20;
/// A run that has not registered and answered by then failed.
const GIVE_UP: Duration = Duration::from_secs(10);
/// The goal of issue 18, point 4.
const GOAL_MS: f64 = 50.0;

/// The release vessel, next to this bench: `<target>/release/deps/coldstart-…` →
/// `<target>/release/examples/vessel`.
fn vessel() -> PathBuf {
    let exe = std::env::current_exe().expect("this bench's path");
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the bench runs from <target>/release/deps");
    let vessel = release.join("examples").join("vessel");
    assert!(
        vessel.exists(),
        "{} is missing: cargo build --release --example vessel --features etcd",
        vessel.display()
    );
    vessel
}

/// A child process killed (and waited for) on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One etcd member on loopback ports, its data in a fresh directory.
fn etcd(data: &std::path::Path) -> (Owned, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(data)
        .args(["--name", "coldstart"])
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("coldstart={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd is required (make deps)");
    (Owned(child), format!("127.0.0.1:{client}"))
}

fn registry(vars: &HashMap<&str, String>) -> Arc<dyn Registry> {
    RegistryConfig::from_lookup(|name| vars.get(name).cloned())
        .and_then(|config| config.build())
        .expect("the measurer's registry")
}

/// Times of one run from the spawn, or why it failed.
struct Run {
    registered: Duration,
    answered: Duration,
}

/// The first node of the vessel not in `seen`, as the watch shows it.
async fn new_node(
    watcher: &mut Watcher,
    seen: &mut HashSet<String>,
) -> Result<micro_core::registry::Service, String> {
    loop {
        let event = match watcher.next().await {
            Ok(event) => event,
            // Fell behind: the newest events follow.
            Err(micro_core::registry::Error::Lagged(_)) => continue,
            Err(e) => return Err(format!("watch: {e}")),
        };
        if event.action == Action::Delete {
            continue;
        }
        if let Some(node) = event.service.nodes.iter().find(|n| !seen.contains(&n.id)) {
            seen.insert(node.id.clone());
            let mut service = event.service.clone();
            service.nodes = vec![node.clone()];
            return Ok(service);
        }
    }
}

async fn one(
    vessel: &PathBuf,
    env: &HashMap<&str, String>,
    watcher: &mut Watcher,
    seen: &mut HashSet<String>,
) -> Result<Run, String> {
    let start = Instant::now();
    let child = Command::new(vessel)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", vessel.display()))?;
    let mut child = Owned(child);
    let result = tokio::time::timeout(GIVE_UP, async {
        let service = new_node(watcher, seen).await?;
        let registered = start.elapsed();
        let node = service.nodes[0].id.clone();
        let found: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        found
            .register(&service, RegisterOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = Client::new(found, Arc::new(TcpTransport::default()));
        loop {
            let request = Request::new(
                bytes::Bytes::from_static(br#"{"capacity": 500, "max_weight": 200000}"#),
                CallOptions::new()
                    .node(node.clone())
                    .timeout(Duration::from_secs(1))
                    .retries(0),
            );
            match client.call_json(NAME, METHOD, request).await {
                Ok(_) => {
                    return Ok(Run {
                        registered,
                        answered: start.elapsed(),
                    });
                }
                // Registered before it answers: try again at once.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("not registered and answering within {GIVE_UP:?}")));
    stop(&mut child.0).await;
    result
}

/// SIGTERM, then waits (a vessel deregisters on it); killed if it takes over 10 s.
async fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("vessel did not stop on SIGTERM within 10 s: killed");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Runs the vessel `runs` times against the registry `env` names; prints a row.
async fn measure(label: &str, env: HashMap<&str, String>, runs: usize) {
    let vessel = vessel();
    let measurer = registry(&env);
    let mut watcher = measurer
        .watch(WatchOptions::service(NAME))
        .await
        .expect("watch the registry");
    let mut seen = HashSet::new();
    let (mut registered, mut answered, mut failed) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        match one(&vessel, &env, &mut watcher, &mut seen).await {
            Ok(run) => {
                registered.push(ms(run.registered));
                answered.push(ms(run.answered));
            }
            Err(e) => {
                eprintln!("{label}: run failed: {e}");
                failed += 1;
            }
        }
        // Let the last vessel's deregistration pass before the next spawn.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    registered.sort_by(f64::total_cmp);
    answered.sort_by(f64::total_cmp);
    let median = quantile(&answered, 0.5);
    let verdict = if median <= GOAL_MS && failed == 0 {
        "met"
    } else {
        "not met"
    };
    println!(
        "| {label} | {runs} | {:.1} | {median:.1} | {:.1} | {:.1} | {failed} | ≤ {GOAL_MS} ms: {verdict} |",
        quantile(&registered, 0.5),
        quantile(&answered, 0.9),
        answered.last().copied().unwrap_or(f64::NAN),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = std::env::var("COLDSTART_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS);
    println!(
        "| registry | runs | spawn → registered, median ms | spawn → first answer, median ms | p90 ms | slowest ms | failed runs | goal |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    // mDNS on loopback only (the namespace has nothing else anyway).
    let mdns = HashMap::from([
        ("MICRO_REGISTRY", "mdns".to_string()),
        ("MICRO_MDNS_INTERFACES", "loopback".to_string()),
    ]);
    measure("mDNS (loopback, private namespace)", mdns, runs).await;

    let data = std::env::temp_dir().join(format!("micro-coldstart-{}", std::process::id()));
    let (etcd, address) = etcd(&data);
    let env = HashMap::from([
        ("MICRO_REGISTRY", "etcd".to_string()),
        ("MICRO_REGISTRY_ADDRESS", address),
    ]);
    // Ready when it answers a read.
    let probe = registry(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.list_services().await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    measure("etcd (one member on loopback)", env, runs).await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&data);
}
