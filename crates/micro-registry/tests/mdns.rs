//! The mDNS registry over real sockets, loopback only.
//!
//! Run inside a private network namespace (`make test` does); the registries here are
//! loopback-only as well, so nothing is sent on other interfaces either way.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use micro_registry::{
    Action, MdnsRegistry, Node, RegisterOptions, Registry, Service, WatchOptions,
};

fn loopback() -> MdnsRegistry {
    MdnsRegistry::builder().loopback_only().build().unwrap()
}

/// Waits (at most 10 s) until `registry` knows `count` nodes of `name`; returns them.
async fn wait_for_nodes(registry: &MdnsRegistry, name: &str, count: usize) -> Vec<Node> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<Node> = registry
            .get_service(name)
            .await
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.nodes)
            .collect();
        if nodes.len() == count {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {} of {count} nodes known after 10s",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Child processes: this test binary run again with only `child_process` selected and
// a role in the environment. A child exits when its stdin closes, so none outlives
// the test; one killed with SIGKILL says no goodbye, like a crashed service.

const ROLE: &str = "MICRO_MDNS_TEST_ROLE";
const CHILD_SERVICE: &str = "MICRO_MDNS_TEST_SERVICE";
const CHILD_NODES: &str = "MICRO_MDNS_TEST_NODES";

struct Child {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Starts a child in `role`; with `nofile`, under that file descriptor limit.
    fn spawn(role: &str, service: &str, nodes: &str, nofile: Option<u32>) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut command = match nofile {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&exe);
                sh
            }
            None => Command::new(&exe),
        };
        let mut child = command
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(CHILD_SERVICE, service)
            .env(CHILD_NODES, nodes)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("child: {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// A child registering `nodes` (`id@port`, comma-separated) of `service`.
    fn serve(service: &str, nodes: &[(String, u16)]) -> Self {
        let list: Vec<String> = nodes
            .iter()
            .map(|(id, port)| format!("{id}@{port}"))
            .collect();
        Self::spawn("serve", service, &list.join(","), None)
    }

    /// Waits (at most `within`) for a line of output with `prefix` in it (libtest may
    /// have started the line).
    fn expect_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no {prefix:?} from the child within {within:?}: {e}"),
            }
        }
    }

    /// SIGKILL: no goodbye.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (at most `within`) for the child to exit; whether it succeeded.
    fn wait(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "child still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child side (see [`Child`]); does nothing when run as a test of its own.
#[tokio::test(flavor = "multi_thread")]
async fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let service = std::env::var(CHILD_SERVICE).unwrap();
    let nodes = std::env::var(CHILD_NODES).unwrap();
    match role.as_str() {
        "serve" => serve_child(&service, &nodes).await,
        "emfile" => emfile_child(&service, nodes.parse().unwrap(), false).await,
        "emfile-browse" => emfile_child(&service, nodes.parse().unwrap(), true).await,
        other => panic!("unknown role {other}"),
    }
}

/// Registers the nodes, says READY, and stays until stdin closes.
async fn serve_child(name: &str, nodes: &str) {
    let registry = loopback();
    for spec in nodes.split(',') {
        // id@port, or id@port@ttl-seconds.
        let mut parts = spec.split('@');
        let (id, port) = (parts.next().unwrap(), parts.next().unwrap());
        let mut options = RegisterOptions::default();
        if let Some(ttl) = parts.next() {
            options = options.ttl(Duration::from_secs(ttl.parse().unwrap()));
        }
        let mut svc = service(id, port.parse().unwrap());
        svc.name = name.into();
        registry.register(&svc, options).await.unwrap();
    }
    println!("READY");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await
    .unwrap();
}

/// Learns `count` nodes of `name`, then uses up every file descriptor for longer than
/// mdns-sd's interface check interval, then frees them: the nodes must stay known
/// throughout, with no Delete event. With `browse`, the registry also runs mdns-sd's
/// browse (as it does where it cannot listen on the mDNS port), whose removals the
/// failing interface check provokes.
async fn emfile_child(name: &str, count: usize, browse: bool) {
    let client = MdnsRegistry::builder()
        .loopback_only()
        .browse(browse)
        .build()
        .unwrap();
    wait_for_nodes(&client, name, count).await;
    let mut watcher = client.watch(WatchOptions::service(name)).await.unwrap();

    let mut files = Vec::new();
    let exhausted = loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(e) => break e,
        }
        assert!(files.len() < 1_000_000, "no file descriptor limit");
    };
    // EMFILE: the process is out of file descriptors.
    assert_eq!(exhausted.raw_os_error(), Some(24), "{exhausted}");
    let check = Duration::from_secs(u64::from(mdns_sd::IP_CHECK_INTERVAL_IN_SECS_DEFAULT) + 2);
    tokio::time::sleep(check).await;
    let during = client
        .get_service(name)
        .await
        .map_or(0, |s| s[0].nodes.len());
    let stats_during = client.stats();
    drop(files);
    tokio::time::sleep(check).await;
    let after = client
        .get_service(name)
        .await
        .map_or(0, |s| s[0].nodes.len());
    let mut events = Vec::new();
    while let Ok(event) = tokio::time::timeout(Duration::ZERO, watcher.next()).await {
        events.push(event.unwrap());
    }
    println!(
        "RESULT during={during} after={after} events={} stats={:?}",
        events.len(),
        client.stats()
    );
    assert_eq!(during, count, "nodes lost while out of file descriptors");
    assert_eq!(after, count, "nodes lost after file descriptors came back");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(stats_during.suspects_dropped, 0, "{stats_during:?}");
    if browse {
        // mdns-sd did drop its instances (its interface check failed), and this
        // registry could not ask the nodes: the failure this test is about did happen.
        assert!(
            stats_during.check_errors > 0,
            "out of file descriptors, yet no check failed: {stats_during:?}"
        );
    }
    // Without the browse, mdns-sd's failing check does not reach the registry at all:
    // its view is its own (start-up answers, announcements, goodbyes).
}

fn service(id: &str, port: u16) -> Service {
    let mut node = Node::new(id, format!("127.0.0.1:{port}"));
    node.metadata.insert("protocol".into(), "grpc".into());
    Service::new("go.micro.srv.mdnstest")
        .version("latest")
        .node(node)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_sees_register_and_deregister() {
    let server = loopback();
    let client = loopback();
    let mut watcher = client
        .watch(WatchOptions::service("go.micro.srv.mdnstest"))
        .await
        .unwrap();

    let svc = service("go.micro.srv.mdnstest-a", 4000);
    let started = Instant::now();
    server
        .register(&svc, RegisterOptions::default())
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("no create event within 5s")
        .unwrap();
    eprintln!("register -> visible: {:?}", started.elapsed());
    assert_eq!(event.action, Action::Create);
    assert_eq!(event.service.nodes[0].address, "127.0.0.1:4000");
    assert_eq!(event.service.nodes[0].metadata["protocol"], "grpc");

    let found = client.get_service("go.micro.srv.mdnstest").await.unwrap();
    assert_eq!(found[0].nodes[0].id, "go.micro.srv.mdnstest-a");

    let started = Instant::now();
    server.deregister(&svc).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("no delete event within 5s")
        .unwrap();
    eprintln!("deregister -> gone: {:?}", started.elapsed());
    assert_eq!(event.action, Action::Delete);
    assert!(
        client
            .get_service("go.micro.srv.mdnstest")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_service_is_not_found_within_a_second() {
    let registry = loopback();
    let started = Instant::now();
    let err = registry
        .get_service("go.micro.srv.nothing")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("go.micro.srv.nothing"));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn several_nodes_and_versions_round_trip() {
    let server = loopback();
    let client = loopback();
    let mut expected = Vec::new();
    for (i, version) in ["1.0", "1.0", "2.0"].iter().enumerate() {
        let mut svc = service(&format!("go.micro.srv.multi-{i}"), 5000 + i as u16);
        svc.name = "go.micro.srv.multi".into();
        svc.version = (*version).into();
        svc.endpoints.push(micro_registry::Endpoint {
            name: format!("Multi.Method{i}"),
            ..Default::default()
        });
        server
            .register(&svc, RegisterOptions::default())
            .await
            .unwrap();
        expected.push(svc);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let found = client
            .get_service("go.micro.srv.multi")
            .await
            .unwrap_or_default();
        if found.iter().map(|s| s.nodes.len()).sum::<usize>() == 3 || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (found[0].version.as_str(), found[0].nodes.len()),
        ("1.0", 2)
    );
    assert_eq!(
        (found[1].version.as_str(), found[1].nodes.len()),
        ("2.0", 1)
    );
    assert_eq!(found[1].endpoints[0].name, "Multi.Method2");
    for svc in &expected {
        server.deregister(svc).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_too_large_for_mdns_are_refused_clearly() {
    let registry = loopback();
    let mut svc = service("go.micro.srv.huge-1", 4100);
    for i in 0..200 {
        svc.endpoints.push(micro_registry::Endpoint {
            name: format!("Huge.SomeRatherLongMethodName{i}"),
            ..Default::default()
        });
    }
    let err = registry
        .register(&svc, RegisterOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("bytes of TXT; mDNS allows"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_instances_and_garbage_packets_are_ignored_and_counted() {
    use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

    // A peer that announces hundreds of bogus micro instances.
    let hostile = ServiceDaemon::new().unwrap();
    hostile.disable_interface(IfKind::All).unwrap();
    hostile.enable_interface(IfKind::LoopbackV4).unwrap();
    let bad_txt: [&[(&str, &str)]; 5] = [
        &[],
        &[("txtvers", "1"), ("service", "x")],
        &[("txtvers", "9"), ("service", "x"), ("id", "x-1")],
        &[
            ("txtvers", "1"),
            ("service", "x"),
            ("id", "x-1"),
            ("meta.0", "{not json"),
        ],
        &[
            ("txtvers", "1"),
            ("service", "x"),
            ("id", "x-1"),
            ("ep.1", "[]"),
        ],
    ];
    for i in 0..300 {
        let props: Vec<(&str, &str)> = bad_txt[i % bad_txt.len()].to_vec();
        let mut info = ServiceInfo::new(
            "_micro._tcp.local.",
            &format!("bogus-{i}"),
            "bogus.local.",
            "127.0.0.1",
            9,
            &props[..],
        )
        .unwrap();
        info.set_requires_probe(false);
        // The daemon's command queue is bounded; wait for room.
        while let Err(mdns_sd::Error::Again) = hostile.register(info.clone()) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // And raw garbage at the mDNS port.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [0usize, 1, 12, 13, 100, 512, 1400] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        let _ = sock.send_to(&junk, "224.0.0.251:5353");
    }

    let server = loopback();
    let mut svc = service("go.micro.srv.mdnsreal-1", 4300);
    svc.name = "go.micro.srv.mdnsreal".into();
    server
        .register(&svc, RegisterOptions::default())
        .await
        .unwrap();
    let client = loopback();
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stats().malformed < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.stats().malformed, 300, "{:?}", client.stats());
    let listed = client.list_services().await.unwrap();
    assert!(listed.iter().all(|s| s.name != "x"), "{listed:?}");
    // Still discovers the real node (amid the flood, possibly on the browse's next
    // query rather than the first answer).
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        match client.get_service("go.micro.srv.mdnsreal").await {
            Ok(found) => break found,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(found[0].nodes[0].id, "go.micro.srv.mdnsreal-1");
    let _ = hostile.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_node_with_a_short_ttl_is_kept_alive() {
    let server = loopback();
    let client = loopback();
    let mut svc = service("go.micro.srv.alive-1", 4400);
    svc.name = "go.micro.srv.alive".into();
    let mut watcher = client
        .watch(WatchOptions::service("go.micro.srv.alive"))
        .await
        .unwrap();
    server
        .register(&svc, RegisterOptions::default().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let created = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.action, Action::Create);
    // Three TTLs later it is still there: liveness queries keep it fresh.
    let quiet = tokio::time::timeout(Duration::from_secs(3), watcher.next()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    assert_eq!(
        client.get_service("go.micro.srv.alive").await.unwrap()[0]
            .nodes
            .len(),
        1
    );
    server.deregister(&svc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn announcements_keep_a_node_alive_and_a_killed_one_expires_by_its_ttl() {
    let name = "go.micro.srv.announced";
    let id = format!("{name}-{}", std::process::id());
    // A TTL of 6 s: announced every 2 s; asked after 4.8 s of silence.
    let mut child = Child::spawn("serve", name, &format!("{id}@4660@6"), None);
    child.expect_line("READY", Duration::from_secs(10));
    let client = loopback();
    wait_for_nodes(&client, name, 1).await;
    let mut watcher = client.watch(WatchOptions::service(name)).await.unwrap();

    // Past its TTL it is still there: its own announcements, heard by every registry,
    // keep it (on a loaded host one may come late, and then it is asked; either way it
    // stays while it lives). `make bench-scale` shows that no registry asks at rest.
    let quiet = tokio::time::timeout(Duration::from_secs(7), watcher.next()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    let asked_alive = client.stats().quiet_asked;

    // Killed, it announces nothing more: once quiet it is asked, does not answer, and
    // is gone within its TTL of its last announcement (at most 2 s before the kill).
    child.kill();
    let killed = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(15), watcher.next())
        .await
        .expect("no delete within 15 s")
        .unwrap();
    let took = killed.elapsed();
    eprintln!("SIGKILL -> delete: {took:?} (TTL 6 s)");
    assert_eq!(event.action, Action::Delete);
    assert_eq!(event.service.nodes[0].id, id);
    assert!(took < Duration::from_secs(8), "{took:?}");
    let stats = client.stats();
    assert!(stats.quiet_asked > asked_alive, "{stats:?}");
    // Going quiet is not a suspicion: nothing was dropped before its TTL.
    assert_eq!(stats.suspects_dropped, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_that_is_suspected_is_dropped_within_a_second() {
    let name = "go.micro.srv.killed";
    let id = format!("{name}-{}", std::process::id());
    let mut child = Child::serve(name, &[(id.clone(), 4600)]);
    child.expect_line("READY", Duration::from_secs(10));
    let client = loopback();
    let node = wait_for_nodes(&client, name, 1).await.remove(0);
    assert_eq!(node.id, id);
    let mut watcher = client.watch(WatchOptions::service(name)).await.unwrap();

    child.kill();
    // No goodbye: without a suspicion it would stay for its TTL (90 s).
    assert_eq!(client.get_service(name).await.unwrap()[0].nodes.len(), 1);

    let started = Instant::now();
    for _ in 0..100 {
        client.suspect(name, &node);
    }
    let returned = started.elapsed();
    let event = tokio::time::timeout(Duration::from_millis(1500), watcher.next())
        .await
        .expect("not dropped within ~1s of suspect")
        .unwrap();
    eprintln!(
        "suspect x100 returned in {returned:?}; killed node gone after {:?}",
        started.elapsed()
    );
    assert_eq!(event.action, Action::Delete);
    assert_eq!(event.service.nodes[0].id, id);
    assert!(client.get_service(name).await.unwrap_err().is_not_found());
    // A hundred suspicions while one check ran: asked once, dropped once, and no
    // other event.
    let quiet = tokio::time::timeout(Duration::from_millis(500), watcher.next()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    let stats = client.stats();
    assert_eq!(
        (
            stats.suspects_asked,
            stats.suspects_dropped,
            stats.check_errors
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    // Suspecting a node that is gone does nothing.
    client.suspect(name, &node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.stats().suspects_asked, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_node_that_is_suspected_stays() {
    let name = "go.micro.srv.suspectlive";
    let server = loopback();
    let client = loopback();
    let mut svc = service("go.micro.srv.suspectlive-1", 4650);
    svc.name = name.into();
    server
        .register(&svc, RegisterOptions::default())
        .await
        .unwrap();
    let node = wait_for_nodes(&client, name, 1).await.remove(0);
    let mut watcher = client.watch(WatchOptions::service(name)).await.unwrap();

    for _ in 0..10 {
        client.suspect(name, &node);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while client.stats().suspects_answered == 0 {
        assert!(
            Instant::now() < deadline,
            "no answer within 2s: {:?}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), watcher.next()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    let stats = client.stats();
    assert_eq!(stats.suspects_asked, stats.suspects_answered, "{stats:?}");
    assert_eq!((stats.suspects_dropped, stats.check_errors), (0, 0));
    assert_eq!(client.get_service(name).await.unwrap()[0].nodes.len(), 1);

    // A node of this process, and a node nobody knows: nothing to ask.
    server.suspect(name, &node);
    client.suspect(
        name,
        &Node::new("go.micro.srv.suspectlive-x", "127.0.0.1:1"),
    );
    client.suspect("go.micro.srv.nothing", &node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stats().suspects_asked, 0);
    assert_eq!(client.stats().suspects_asked, stats.suspects_asked);
    assert_eq!(server.get_service(name).await.unwrap()[0].nodes.len(), 1);
    server.deregister(&svc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_registries_find_every_node_on_their_first_lookup() {
    const CHILDREN: usize = 6;
    const PER_CHILD: usize = 5;
    const ROUNDS: usize = 10;
    let name = "go.micro.srv.crowd";
    let mut ids = Vec::new();
    let children: Vec<Child> = (0..CHILDREN)
        .map(|c| {
            let nodes: Vec<(String, u16)> = (0..PER_CHILD)
                .map(|i| {
                    let id = format!("{name}-{}-{c}-{i}", std::process::id());
                    (id, 4700 + (c * PER_CHILD + i) as u16)
                })
                .collect();
            ids.extend(nodes.iter().map(|(id, _)| id.clone()));
            Child::serve(name, &nodes)
        })
        .collect();
    for child in &children {
        child.expect_line("READY", Duration::from_secs(20));
    }
    let total = CHILDREN * PER_CHILD;
    // All announced (as a long-lived registry sees them).
    let witness = loopback();
    wait_for_nodes(&witness, name, total).await;

    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let client = loopback();
        let started = Instant::now();
        let found = client.get_service(name).await;
        let took = started.elapsed();
        let heard: Vec<&str> = found
            .iter()
            .flatten()
            .flat_map(|s| s.nodes.iter().map(|n| n.id.as_str()))
            .collect();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !heard.contains(&id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "fresh registry {round}: first lookup found {} of {total} nodes after {took:?}; missing {missing:?} ({:?})",
            heard.len(),
            found.as_ref().err()
        );
        times.push(took);
        // After start-up, a miss is answered from memory.
        let started = Instant::now();
        assert!(
            client
                .get_service("go.micro.srv.nobody")
                .await
                .unwrap_err()
                .is_not_found()
        );
        if round == 0 {
            eprintln!("a miss after start-up: {:?}", started.elapsed());
        }
    }
    eprintln!("first lookups with {total} nodes: {times:?}");
    drop(children);
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_forgets_no_node() {
    let name = "go.micro.srv.fdless";
    let server = loopback();
    let count = 3;
    let mut services = Vec::new();
    for i in 0..count {
        let mut svc = service(&format!("{name}-{}-{i}", std::process::id()), 4800 + i);
        svc.name = name.into();
        server
            .register(&svc, RegisterOptions::default())
            .await
            .unwrap();
        services.push(svc);
    }
    // The client runs in a child under a low file descriptor limit, so that only it
    // runs out.
    // Both ways a registry learns: its listener alone (the default), and with
    // mdns-sd's browse too (the fallback where it cannot listen).
    let mut children = [
        Child::spawn("emfile", name, &count.to_string(), Some(256)),
        Child::spawn("emfile-browse", name, &count.to_string(), Some(256)),
    ];
    for child in &mut children {
        let ok = tokio::task::block_in_place(|| child.wait(Duration::from_secs(60)));
        assert!(ok, "a child failed; its output is above");
    }
    for svc in &services {
        server.deregister(svc).await.unwrap();
    }
}
