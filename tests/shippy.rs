//! The worked example end to end: vessel, consignment and the CLI as real processes,
//! finding each other over mDNS on loopback.
//!
//! Run inside a private network namespace (`make test` does). Every process here is
//! also told `MICRO_MDNS_INTERFACES=loopback`, so nothing is announced beyond loopback.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use micro_core::registry::{Action, MdnsRegistry, Node, RegisterOptions, Registry, WatchOptions};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Request, Service};
use micro_examples::consignment::{Consignment, Container, GetRequest, ShippingService};
use micro_examples::vessel::{
    Response as VesselResponse, Specification, Vessel, VesselServiceHandler, vessel_service_handler,
};

/// The example services have fixed names, so tests that start them take turns
/// (nextest runs them one at a time too: `.config/nextest.toml`).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where cargo put the example binaries: next to this test's `deps` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("examples")
        .join(name);
    assert!(
        dir.exists(),
        "{} is missing: build the examples first (cargo build --examples)",
        dir.display()
    );
    dir
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    child: Child,
}

impl Running {
    fn start(name: &str) -> Self {
        Self::start_with(name, &[])
    }

    fn start_with(name: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(name, env, Stdio::inherit())
    }

    /// Started with its log (at `info`) written to `log`.
    fn start_logged(name: &str, log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(name, &[("RUST_LOG", "info")], Stdio::from(file))
    }

    fn spawn(name: &str, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let child = Command::new(example(name))
            .env("MICRO_MDNS_INTERFACES", "loopback")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { child }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not stop within 10s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn cli(args: &[&str]) -> Output {
    cli_with(args, &[])
}

fn cli_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(example("consignment-cli"))
        .args(args)
        .envs(env.iter().copied())
        .env("MICRO_MDNS_INTERFACES", "loopback")
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running consignment-cli")
}

fn registry() -> MdnsRegistry {
    MdnsRegistry::builder()
        .loopback_only()
        .build()
        .expect("mdns registry")
}

async fn wait_for(registry: &MdnsRegistry, name: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.get_service(name).await.is_ok() != present {
        assert!(
            Instant::now() < deadline,
            "{name} present={} not reached in 10s",
            !present
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consignment_gets_a_vessel_found_by_name() {
    let _turn = SERIAL.lock().await;
    let registry = registry();
    let vessel_log = std::env::temp_dir().join(format!("vessel-{}.log", std::process::id()));
    let vessel = Running::start_logged("vessel", &vessel_log);
    let consignment = Running::start("consignment");
    wait_for(&registry, "go.micro.srv.vessel", true).await;
    wait_for(&registry, "go.micro.srv.consignment", true).await;

    let out = cli(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cli failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Created: true"), "{stdout}");
    assert!(stdout.contains("vessel_id: vessel001"), "{stdout}");
    assert!(stdout.contains("Consignments: 1"), "{stdout}");

    // What the service stored carries the vessel.
    let client = Client::new(
        std::sync::Arc::new(registry.clone()),
        std::sync::Arc::new(TcpTransport::default()),
    );
    let shipping = ShippingService::new("go.micro.srv.consignment", client);
    let stored = shipping
        .get_consignments(GetRequest {})
        .await
        .expect("get consignments");
    assert_eq!(stored.consignments.len(), 1);
    assert_eq!(stored.consignments[0].vessel_id, "vessel001");
    assert_eq!(stored.consignments[0].containers.len(), 3);

    // The booking was announced on consignment.created, and the vessel service heard it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&vessel_log).unwrap_or_default();
        if log.contains("booking received") {
            assert!(log.contains("consignment=consignment-1"), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the vessel service never got the event:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&vessel_log);

    // A load no vessel can take is refused, and nothing is stored.
    let heavy = std::env::temp_dir().join(format!("heavy-consignment-{}.json", std::process::id()));
    std::fs::write(
        &heavy,
        r#"{"description": "too heavy", "weight": 300000, "containers": [{"customer_id": "c1"}]}"#,
    )
    .expect("write");
    let out = cli(&[heavy.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&heavy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no vessel found by that spec"), "{stderr}");
    assert!(stderr.contains("code 404"), "{stderr}");
    let stored = shipping
        .get_consignments(GetRequest {})
        .await
        .expect("get consignments");
    assert_eq!(stored.consignments.len(), 1);

    // Without a vessel service, booking fails clearly and stores nothing.
    assert!(vessel.stop().success());
    wait_for(&registry, "go.micro.srv.vessel", false).await;
    let out = cli(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no vessel available"), "{stderr}");
    assert!(stderr.contains("go.micro.srv.vessel"), "{stderr}");
    let stored = shipping
        .get_consignments(Request::new(
            GetRequest {},
            CallOptions::new().timeout(Duration::from_secs(5)),
        ))
        .await
        .expect("get consignments");
    assert_eq!(stored.consignments.len(), 1);

    assert!(consignment.stop().success());
}

/// A vessel service in the test process that answers after `delay_ms`.
struct SlowFleet {
    delay_ms: Arc<AtomicU64>,
}

#[micro_core::async_trait]
impl VesselServiceHandler for SlowFleet {
    async fn find_available(
        &self,
        _ctx: Context,
        _spec: Specification,
    ) -> Result<VesselResponse, micro_core::Error> {
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        tokio::time::sleep(delay).await;
        Ok(VesselResponse {
            vessel: Some(Vessel {
                id: "vessel001".into(),
                ..Vessel::default()
            }),
            vessels: Vec::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_is_stored_only_while_its_caller_waits_and_never_waits_for_its_event() {
    let _turn = SERIAL.lock().await;
    let registry = registry();
    let delay_ms = Arc::new(AtomicU64::new(1500));
    let vessel = Service::from_config("go.micro.srv.vessel", micro_core::Config::default())
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .handle(vessel_service_handler(SlowFleet {
            delay_ms: Arc::clone(&delay_ms),
        }))
        .unwrap();
    let (stop_vessel, vessel_stopped) = tokio::sync::oneshot::channel::<()>();
    let vessel = tokio::spawn(vessel.run_until(async move {
        let _ = vessel_stopped.await;
    }));
    let log = std::env::temp_dir().join(format!("consignment-{}.log", std::process::id()));
    let consignment = Running::start_logged("consignment", &log);
    wait_for(&registry, "go.micro.srv.vessel", true).await;
    wait_for(&registry, "go.micro.srv.consignment", true).await;
    let shipping = ShippingService::new(
        "go.micro.srv.consignment",
        Client::new(
            Arc::new(registry.clone()),
            Arc::new(TcpTransport::default()),
        ),
    );
    let booking = || Consignment {
        description: "deadline test".into(),
        weight: 100,
        containers: vec![Container::default()],
        ..Consignment::default()
    };
    let stored = || async {
        shipping
            .get_consignments(GetRequest {})
            .await
            .expect("get consignments")
            .consignments
            .len()
    };

    // The vessel service takes 1.5 s; the caller waits 0.7 s: DEADLINE_EXCEEDED, and
    // nothing is booked, then or when the vessel service answers.
    let started = Instant::now();
    let err = shipping
        .create_consignment(Request::new(
            booking(),
            CallOptions::new().timeout(Duration::from_millis(700)),
        ))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code, 408, "{err:?}");
    assert!(waited < Duration::from_millis(1200), "{waited:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(stored().await, 0);

    // A subscriber of consignment.created that accepts connections and never answers
    // (a process hung, or dead behind a firewall).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut node = Node::new("micro.broker-silent", silent_address.clone());
    node.metadata.insert("broker".into(), "registry".into());
    node.metadata
        .insert("topic".into(), "consignment.created".into());
    let subscription = micro_core::registry::Service::new("micro.broker")
        .version("broadcast")
        .node(node);
    registry
        .register(
            &subscription,
            RegisterOptions::default().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    wait_for(&registry, "micro.broker", true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // With a fast vessel service the booking is stored and answered at once: the
    // announcement, which the silent subscriber holds up, is not waited for.
    delay_ms.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let created = shipping
        .create_consignment(Request::new(
            booking(),
            CallOptions::new().timeout(Duration::from_secs(2)),
        ))
        .await
        .expect("booked");
    let took = started.elapsed();
    eprintln!("booking with a silent subscriber: {took:?}");
    assert!(created.created);
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(stored().await, 1);

    // The failed announcement is logged as what it was, once its own 5 s ran out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("announcing it failed") {
            let failed = text
                .lines()
                .find(|l| l.contains("delivery to a subscriber failed"))
                .unwrap_or_else(|| panic!("no delivery failure logged:\n{text}"));
            assert!(failed.contains("micro.broker-silent"), "{failed}");
            assert!(failed.contains(&silent_address), "{failed}");
            assert!(failed.contains("consignment.created"), "{failed}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed announcement logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&log);

    registry.deregister(&subscription).await.unwrap();
    holding.abort();
    assert!(consignment.stop().success());
    stop_vessel.send(()).unwrap();
    vessel.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_service_disappears_from_a_watching_registry() {
    let _turn = SERIAL.lock().await;
    let registry = registry();
    let mut watcher = registry
        .watch(WatchOptions::service("go.micro.srv.vessel"))
        .await
        .expect("watch");
    let vessel = Running::start("vessel");
    let created = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("no create event")
        .expect("watcher");
    assert_eq!(created.action, Action::Create);
    let node = created.service.nodes[0].clone();
    assert!(node.id.starts_with("go.micro.srv.vessel-"), "{}", node.id);
    assert!(!node.address.starts_with("0.0.0.0"), "{}", node.address);

    let stopped_at = Instant::now();
    assert!(
        vessel.stop().success(),
        "vessel did not exit cleanly on SIGTERM"
    );
    let deleted = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("no delete event within 5s")
        .expect("watcher");
    assert_eq!(deleted.action, Action::Delete);
    assert_eq!(deleted.service.nodes[0].id, node.id);
    eprintln!("SIGTERM -> delete seen: {:?}", stopped_at.elapsed());
    assert!(
        registry
            .get_service("go.micro.srv.vessel")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_disappears_within_its_ttl() {
    let _turn = SERIAL.lock().await;
    let registry = registry();
    let mut watcher = registry
        .watch(WatchOptions::service("go.micro.srv.vessel"))
        .await
        .expect("watch");
    // Its subscription to consignment.created lives by the same TTL.
    let mut subscriptions = registry
        .watch(WatchOptions::service("micro.broker"))
        .await
        .expect("watch");
    let mut vessel = Running::start_with(
        "vessel",
        &[
            ("MICRO_REGISTER_TTL", "2"),
            ("MICRO_REGISTER_INTERVAL", "1"),
        ],
    );
    let created = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("no create event")
        .expect("watcher");
    assert_eq!(created.action, Action::Create);
    let subscribed = tokio::time::timeout(Duration::from_secs(10), subscriptions.next())
        .await
        .expect("no subscription")
        .expect("watcher");
    assert_eq!(subscribed.action, Action::Create);
    // Alive, it outlives its TTL: liveness queries keep it.
    let quiet = tokio::time::timeout(Duration::from_secs(3), watcher.next()).await;
    assert!(quiet.is_err(), "unexpected event while alive: {quiet:?}");
    assert!(
        registry.get_service("micro.broker").await.is_ok(),
        "the subscription left while its process was alive"
    );

    // No goodbye: the process dies at once.
    vessel.child.kill().expect("SIGKILL");
    let _ = vessel.child.wait();
    let killed_at = Instant::now();
    let deleted = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("no delete event within 10s")
        .expect("watcher");
    let took = killed_at.elapsed();
    eprintln!("SIGKILL -> delete seen: {took:?} (TTL 2s)");
    assert_eq!(deleted.action, Action::Delete);
    assert_eq!(deleted.service.nodes[0].id, created.service.nodes[0].id);
    // Its TTL from its last announcement (a second or two before the kill), and a sweep.
    assert!(took < Duration::from_millis(3500), "{took:?}");
    // The subscription goes the same way (it was registered with a fixed 90 s TTL).
    let gone = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), subscriptions.next())
            .await
            .expect("no subscription delete event within 10s")
            .expect("watcher");
        if event.action == Action::Delete {
            break event;
        }
    };
    let took = killed_at.elapsed();
    eprintln!("SIGKILL -> subscription delete seen: {took:?} (TTL 2s)");
    assert_eq!(gone.service.nodes[0].id, subscribed.service.nodes[0].id);
    assert!(took < Duration::from_millis(3500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_service_fails_within_a_second_naming_it() {
    let client = Client::new(
        std::sync::Arc::new(registry()),
        std::sync::Arc::new(TcpTransport::default()),
    );
    let shipping = ShippingService::new("go.micro.srv.nowhere", client);
    let started = Instant::now();
    let err = shipping.get_consignments(GetRequest {}).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.detail, "service go.micro.srv.nowhere: not found");
}

#[test]
fn the_cli_reports_a_missing_or_malformed_file() {
    let out = cli(&["/nonexistent/consignment.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read /nonexistent/consignment.json"),
        "{stderr}"
    );

    let bad = std::env::temp_dir().join(format!("bad-consignment-{}.json", std::process::id()));
    std::fs::write(&bad, "{\"weight\": \"heavy\"").expect("write");
    let out = cli(&[bad.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("is not a valid consignment"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_file(bad);
}

#[cfg(feature = "etcd")]
#[path = "../crates/micro-registry/tests/support/etcd.rs"]
mod etcd_support;

/// The same example with `MICRO_REGISTRY=etcd`: no code changes, a real etcd.
#[cfg(feature = "etcd")]
mod on_etcd {
    use super::*;

    use etcd_support::EtcdCluster;
    use micro_core::registry::{EtcdRegistry, Event, Watcher};

    async fn next(watcher: &mut Watcher) -> Event {
        tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("a watch event within 10s")
            .expect("watcher")
    }

    async fn wait_found(registry: &EtcdRegistry, name: &str, within: Duration) -> Duration {
        let started = Instant::now();
        while registry.get_service(name).await.is_err() {
            assert!(
                started.elapsed() < within,
                "{name} not registered within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_example_runs_unchanged_on_etcd() {
        let _turn = SERIAL.lock().await;
        let Some(mut etcd) = EtcdCluster::start(1) else {
            return;
        };
        let address = etcd.address_list();
        let on_etcd = [
            ("MICRO_REGISTRY", "etcd"),
            ("MICRO_REGISTRY_ADDRESS", address.as_str()),
        ];
        let registry = EtcdRegistry::new(etcd.addresses()).expect("etcd registry");
        let mut vessels = registry
            .watch(WatchOptions::service("go.micro.srv.vessel"))
            .await
            .expect("watch");

        let mut vessel = Running::start_with(
            "vessel",
            &[
                on_etcd[0],
                on_etcd[1],
                ("MICRO_REGISTER_TTL", "3"),
                ("MICRO_REGISTER_INTERVAL", "1"),
            ],
        );
        let consignment = Running::start_with(
            "consignment",
            &[
                on_etcd[0],
                on_etcd[1],
                ("MICRO_REGISTER_TTL", "6"),
                ("MICRO_REGISTER_INTERVAL", "2"),
            ],
        );
        let created = next(&mut vessels).await;
        assert_eq!(created.action, Action::Create);
        wait_found(
            &registry,
            "go.micro.srv.consignment",
            Duration::from_secs(10),
        )
        .await;

        let out = cli_with(&[], &on_etcd);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cli failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("vessel_id: vessel001"), "{stdout}");

        // Killed without deregistering: gone when its lease runs out.
        vessel.child.kill().expect("SIGKILL");
        let _ = vessel.child.wait();
        let killed_at = Instant::now();
        let deleted = next(&mut vessels).await;
        let took = killed_at.elapsed();
        eprintln!("etcd: SIGKILL -> delete seen: {took:?} (TTL 3s)");
        assert_eq!(deleted.action, Action::Delete);
        assert_eq!(deleted.service.nodes[0].id, created.service.nodes[0].id);
        // The lease runs TTL from its last renewal; etcd looks for expired leases
        // every 500 ms.
        assert!(took < Duration::from_secs(4), "{took:?}");
        let out = cli_with(&[], &on_etcd);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no vessel available"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // etcd comes back empty: consignment is registered again within its
        // register interval (2s) of etcd answering.
        etcd.restart_empty(0);
        let took = wait_found(
            &registry,
            "go.micro.srv.consignment",
            Duration::from_secs(2),
        )
        .await;
        eprintln!("etcd: restarted empty -> consignment registered again: {took:?}");

        assert!(consignment.stop().success());
        assert!(
            registry
                .get_service("go.micro.srv.consignment")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}
