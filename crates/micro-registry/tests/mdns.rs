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
        .with_version("latest")
        .with_node(node)
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
