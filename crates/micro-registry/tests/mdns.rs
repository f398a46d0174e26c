//! The mDNS registry over real sockets, loopback only.
//!
//! Run inside a private network namespace (`make test` does); the registries here are
//! loopback-only as well, so nothing is sent on other interfaces either way.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use micro_registry::{
    Action, MdnsRegistry, Node, RegisterOptions, Registry, Service, WatchOptions,
};

fn loopback() -> MdnsRegistry {
    MdnsRegistry::builder().loopback_only().build().unwrap()
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
