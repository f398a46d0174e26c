//! The etcd registry against real etcd members on loopback (see `support/etcd.rs`).
#![cfg(feature = "etcd")]
// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/etcd.rs"]
mod support;

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use micro_registry::{
    Action, CachedRegistry, Endpoint, Error, EtcdRegistry, Event, Node, RegisterOptions, Registry,
    Service, Value, WatchOptions, Watcher,
};
use support::EtcdCluster;

fn registry(cluster: &EtcdCluster) -> EtcdRegistry {
    EtcdRegistry::new(cluster.addresses()).expect("etcd registry")
}

fn service(name: &str, version: &str, node: &str) -> Service {
    Service::new(name)
        .version(version)
        .node(Node::new(node, "127.0.0.1:9000"))
}

fn ttl(seconds: u64) -> RegisterOptions {
    RegisterOptions::default().ttl(Duration::from_secs(seconds))
}

async fn next(watcher: &mut Watcher) -> Event {
    tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("a watch event within 10s")
        .expect("watcher running")
}

/// The next event is `action` on node `id`.
async fn expect(watcher: &mut Watcher, action: Action, id: &str) {
    let event = next(watcher).await;
    assert_eq!(
        (event.action, event.service.nodes[0].id.as_str()),
        (action, id)
    );
}

/// Whether `node` of `name` is registered, polled until `present` or `within` passes.
async fn wait_for(
    registry: &EtcdRegistry,
    name: &str,
    node: &str,
    present: bool,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = match registry.get_service(name).await {
            Ok(services) => services
                .iter()
                .any(|s| s.nodes.iter().any(|n| n.id == node)),
            Err(e) if e.is_not_found() => false,
            Err(e) => panic!("get_service failed: {e}"),
        };
        if found == present {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw_client(cluster: &EtcdCluster) -> Client {
    Client::connect(cluster.addresses(), None)
        .await
        .expect("etcd client")
}

#[tokio::test]
async fn registers_gets_lists_and_watches() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let mut one_service = registry
        .watch(WatchOptions::service("greeter"))
        .await
        .unwrap();

    let a = service("greeter", "v1", "greeter-a");
    let b = service("greeter", "v1", "greeter-b");
    let c = service("greeter", "v2", "greeter-c");
    let other = service("greeter.admin", "v1", "admin-1");
    for s in [&a, &b, &c, &other] {
        registry.register(s, ttl(30)).await.unwrap();
    }

    for expected in ["greeter-a", "greeter-b", "greeter-c", "admin-1"] {
        expect(&mut watcher, Action::Create, expected).await;
    }
    // A watch of one service does not see the other, though its name is a prefix.
    for expected in ["greeter-a", "greeter-b", "greeter-c"] {
        assert_eq!(next(&mut one_service).await.service.nodes[0].id, expected);
    }

    let found = registry.get_service("greeter").await.unwrap();
    assert_eq!(found.len(), 2, "one entry per version: {found:?}");
    assert_eq!(
        (found[0].version.as_str(), found[1].version.as_str()),
        ("v1", "v2")
    );
    let ids: Vec<_> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["greeter-a", "greeter-b"]);

    let listed: Vec<_> = registry
        .list_services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("greeter".to_string(), "v1".to_string()),
            ("greeter".to_string(), "v2".to_string()),
            ("greeter.admin".to_string(), "v1".to_string()),
        ]
    );

    // Registering again unchanged (as every register interval does) is not news;
    // a changed node is an update, and it is the next event.
    registry.register(&a, ttl(30)).await.unwrap();
    let mut changed = a.clone();
    changed.nodes[0].address = "127.0.0.1:9001".into();
    registry.register(&changed, ttl(30)).await.unwrap();
    let event = next(&mut watcher).await;
    assert_eq!(event.action, Action::Update);
    assert_eq!(event.service.nodes[0].address, "127.0.0.1:9001");

    registry.deregister(&b).await.unwrap();
    expect(&mut watcher, Action::Delete, "greeter-b").await;

    for s in [&changed, &c, &other] {
        registry.deregister(s).await.unwrap();
    }
    assert!(
        registry
            .get_service("greeter")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        registry
            .get_service("nobody")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(registry.list_services().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_node_is_gone_within_its_ttl() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let observer = registry(&cluster);
    let mut watcher = observer
        .watch(WatchOptions::service("crashy"))
        .await
        .unwrap();

    let node = registry(&cluster);
    node.register(&service("crashy", "latest", "crashy-1"), ttl(2))
        .await
        .unwrap();
    node.register(&service("crashy", "latest", "crashy-2"), ttl(2))
        .await
        .unwrap();
    assert_eq!(next(&mut watcher).await.action, Action::Create);
    assert_eq!(next(&mut watcher).await.action, Action::Create);
    node.deregister(&service("crashy", "latest", "crashy-2"))
        .await
        .unwrap();
    assert_eq!(next(&mut watcher).await.action, Action::Delete);

    // Renewed while it lives: still there after twice its TTL; and the node that
    // left is not written back by anything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let nodes = &observer.get_service("crashy").await.unwrap()[0].nodes;
    let ids: Vec<_> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["crashy-1"]);

    // Dropping the registry stops the renewals and deletes nothing, as a crash.
    let crashed = tokio::time::Instant::now();
    drop(node);
    let event = next(&mut watcher).await;
    let gone_after = crashed.elapsed();
    eprintln!("crash -> delete seen: {gone_after:?} (TTL 2s)");
    assert_eq!(
        (event.action, event.service.nodes[0].id.as_str()),
        (Action::Delete, "crashy-1")
    );
    // The lease runs its TTL from the last renewal (at most a third of the TTL
    // before the crash); etcd looks for expired leases every 500 ms.
    assert!(
        gone_after < Duration::from_secs(4),
        "gone after {gone_after:?}"
    );
    assert!(
        observer
            .get_service("crashy")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn a_cache_over_etcd_follows_changes() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    let cache = CachedRegistry::new(std::sync::Arc::new(registry.clone()));
    registry
        .register(&service("cached", "v1", "cached-1"), ttl(30))
        .await
        .unwrap();
    assert_eq!(cache.lookup("cached").await.unwrap()[0].nodes.len(), 1);

    // The cache learns of the second node from the watch, without asking etcd.
    registry
        .register(&service("cached", "v1", "cached-2"), ttl(30))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let cached = cache.cached("cached").unwrap_or_default();
        if cached.first().is_some_and(|s| s.nodes.len() == 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never saw cached-2: {cached:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What go-micro's etcd registry writes for a gRPC service: Go's encoding/json of
/// `registry.Service` (struct fields in declaration order, map keys sorted, nil
/// maps and slices as null).
const GO_MICRO_KEY: &str =
    "/micro/registry/go.micro.srv.vessel/go.micro.srv.vessel-5a3c4f8e-2f1b-4b7e-9c51-0d6e3a1b2c4d";
const GO_MICRO_VALUE: &str = r#"{"name":"go.micro.srv.vessel","version":"latest","metadata":null,"endpoints":[{"request":{"name":"Specification","type":"Specification","values":[{"name":"capacity","type":"int32","values":null},{"name":"max_weight","type":"int32","values":null}]},"response":{"name":"Response","type":"Response","values":[{"name":"vessel","type":"Vessel","values":null}]},"metadata":{},"name":"VesselService.FindAvailable"}],"nodes":[{"metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"},"id":"go.micro.srv.vessel-5a3c4f8e-2f1b-4b7e-9c51-0d6e3a1b2c4d","address":"10.0.0.7:41237"}]}"#;

#[tokio::test]
async fn reads_and_writes_values_as_go_micro_does() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let mut raw = raw_client(&cluster).await;

    // go-micro -> micro: a go-micro node, written as go-micro writes it.
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    raw.put(
        GO_MICRO_KEY,
        GO_MICRO_VALUE,
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let event = next(&mut watcher).await;
    assert_eq!(event.action, Action::Create);
    let found = registry.get_service("go.micro.srv.vessel").await.unwrap();
    assert_eq!(found.len(), 1);
    let vessel = &found[0];
    assert_eq!(vessel.version, "latest");
    assert!(vessel.metadata.is_empty());
    assert_eq!(vessel.nodes[0].address, "10.0.0.7:41237");
    assert_eq!(vessel.nodes[0].metadata["protocol"], "grpc");
    let endpoint = &vessel.endpoints[0];
    assert_eq!(endpoint.name, "VesselService.FindAvailable");
    let request = endpoint.request.as_ref().unwrap();
    assert_eq!(request.type_name, "Specification");
    assert_eq!(request.values[1].name, "max_weight");
    assert_eq!(event.service, *vessel);

    // micro -> go-micro: the key go-micro's nodePath gives, and a value with exactly
    // the fields go-micro's structs read, under a lease of the TTL.
    let mut consignment = Service::new("go.micro.srv.consignment").version("latest");
    consignment
        .metadata
        .insert("team".into(), "shipping".into());
    let mut endpoint = Endpoint {
        name: "ShippingService.CreateConsignment".into(),
        request: Some(Value::new("Consignment", "Consignment")),
        response: Some(Value::new("Response", "Response")),
        ..Endpoint::default()
    };
    endpoint.metadata.insert("stream".into(), "false".into());
    let mut node = Node::new("go.micro.srv.consignment-1", "10.0.0.8:50051");
    node.metadata.insert("protocol".into(), "grpc".into());
    let consignment = consignment.endpoint(endpoint).node(node);
    registry.register(&consignment, ttl(20)).await.unwrap();

    let stored = raw
        .get(
            "/micro/registry/go.micro.srv.consignment/go.micro.srv.consignment-1",
            None,
        )
        .await
        .unwrap();
    let kv = &stored.kvs()[0];
    let json: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
    let expected = serde_json::json!({
        "name": "go.micro.srv.consignment",
        "version": "latest",
        "metadata": {"team": "shipping"},
        "endpoints": [{
            "name": "ShippingService.CreateConsignment",
            "request": {"name": "Consignment", "type": "Consignment", "values": []},
            "response": {"name": "Response", "type": "Response", "values": []},
            "metadata": {"stream": "false"}
        }],
        "nodes": [{
            "id": "go.micro.srv.consignment-1",
            "address": "10.0.0.8:50051",
            "metadata": {"protocol": "grpc"}
        }]
    });
    assert_eq!(json, expected);
    let granted = raw.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert_eq!(granted.granted_ttl(), 20);

    // Without a TTL (or a zero one), as go-micro: no lease at all.
    for options in [
        RegisterOptions::default(),
        RegisterOptions::default().ttl(Duration::ZERO),
    ] {
        registry.register(&consignment, options).await.unwrap();
        let stored = raw
            .get(
                "/micro/registry/go.micro.srv.consignment/go.micro.srv.consignment-1",
                None,
            )
            .await
            .unwrap();
        assert_eq!(stored.kvs()[0].lease(), 0);
    }
}

#[tokio::test]
async fn values_that_are_not_nodes_are_skipped() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let mut raw = raw_client(&cluster).await;

    for (key, value) in [
        ("/micro/registry/bad/not-json", "{\"name\":"),
        (
            "/micro/registry/bad/no-nodes",
            r#"{"name":"bad","nodes":[]}"#,
        ),
        (
            "/micro/registry/bad/two-nodes",
            r#"{"name":"bad","nodes":[{"id":"x","address":"a:1"},{"id":"y","address":"a:2"}]}"#,
        ),
        ("/micro/registry/bad/binary", "\u{0}\u{1}\u{2}\u{fffd}"),
    ] {
        raw.put(key, value, None).await.unwrap();
    }
    registry
        .register(&service("bad", "v1", "bad-1"), ttl(30))
        .await
        .unwrap();

    // The watch skipped the four and reports the real node.
    expect(&mut watcher, Action::Create, "bad-1").await;
    let found = registry.get_service("bad").await.unwrap();
    assert_eq!(found[0].nodes.len(), 1);
    assert_eq!(registry.list_services().await.unwrap().len(), 1);
    let all = raw
        .get("/micro/registry/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), 5, "nothing was deleted");
}

#[tokio::test]
async fn refuses_what_it_cannot_register_and_bad_addresses() {
    for bad in ["etcd:port", "https://etcd:2379", "::1:2379"] {
        assert!(
            matches!(EtcdRegistry::new([bad]), Err(Error::Config(_))),
            "{bad} accepted"
        );
    }
    let registry = EtcdRegistry::new(["127.0.0.1:1"]).unwrap();
    let dotted = service("greeter", "v1", "..");
    assert!(matches!(
        registry.register(&dotted, ttl(5)).await,
        Err(Error::InvalidService { .. })
    ));
    // Nobody listens on port 1: a clear backend error within the timeout.
    let fast = EtcdRegistry::builder()
        .addresses(["127.0.0.1:1"])
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let error = fast.get_service("greeter").await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                registry: "etcd",
                ..
            }
        ),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(fast.watch(WatchOptions::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_cluster_keeps_working_without_one() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let registry = registry(&cluster);
    let observer = EtcdRegistry::new(cluster.addresses().into_iter().rev()).unwrap();
    let mut watcher = registry
        .watch(WatchOptions::service("sturdy"))
        .await
        .unwrap();
    registry
        .register(&service("sturdy", "v1", "sturdy-a"), ttl(3))
        .await
        .unwrap();
    assert_eq!(next(&mut watcher).await.action, Action::Create);

    // The member both the registry's calls and its watch use goes down.
    cluster.kill(0);

    registry
        .register(&service("sturdy", "v1", "sturdy-b"), ttl(3))
        .await
        .unwrap();
    expect(&mut watcher, Action::Create, "sturdy-b").await;
    assert_eq!(
        observer.get_service("sturdy").await.unwrap()[0].nodes.len(),
        2
    );

    // The leases are renewed through the others: both nodes outlive their TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ids: Vec<_> = registry.get_service("sturdy").await.unwrap()[0]
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(ids, ["sturdy-a", "sturdy-b"]);

    registry
        .deregister(&service("sturdy", "v1", "sturdy-a"))
        .await
        .unwrap();
    expect(&mut watcher, Action::Delete, "sturdy-a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_come_back_after_etcd_restarts() {
    let Some(mut cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    let observer = registry.clone();
    let mut watcher = observer
        .watch(WatchOptions::service("phoenix"))
        .await
        .unwrap();
    let node = service("phoenix", "v1", "phoenix-1");
    registry.register(&node, ttl(4)).await.unwrap();
    assert_eq!(next(&mut watcher).await.action, Action::Create);

    // Restarted with its data: the lease survives, the node is there.
    cluster.restart(0);
    assert!(
        wait_for(
            &registry,
            "phoenix",
            "phoenix-1",
            true,
            Duration::from_secs(2)
        )
        .await
    );

    // Restarted empty: the lease is gone with everything else, and the registry
    // writes the node again by itself, well within a register interval.
    cluster.restart_empty(0);
    assert!(
        wait_for(
            &registry,
            "phoenix",
            "phoenix-1",
            true,
            Duration::from_secs(4)
        )
        .await,
        "not registered again within 4s"
    );
    // The watch came back too: a new node is reported.
    registry
        .register(&service("phoenix", "v1", "phoenix-2"), ttl(4))
        .await
        .unwrap();
    loop {
        let event = next(&mut watcher).await;
        if event.service.nodes[0].id == "phoenix-2" {
            assert_eq!(event.action, Action::Create);
            break;
        }
    }
}

/// A registry bigger than one read page (1,000 keys) and than one gRPC message
/// (4 MiB): listed, looked up and watched whole. One range read of it used to fail
/// with "decoded message length too large", and the watch never started.
#[tokio::test]
async fn an_etcd_registry_over_one_page_and_4_mib_is_read_whole() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let mut raw = raw_client(&cluster).await;
    // 2,500 small nodes of one service: three pages.
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let mut raw = raw.clone();
        tasks.spawn(async move {
            for i in (writer..2_500).step_by(16) {
                let id = format!("many-{i:04}");
                let value =
                    serde_json::to_vec(&service("many", "v1", &id)).expect("a service value");
                raw.put(format!("/micro/registry/many/{id}"), value, None)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // Five nodes of 1 MiB each (etcd takes up to 1.5 MiB a request): over 4 MiB.
    for i in 0..5 {
        let mut big = service("big", "v1", &format!("big-{i}"));
        big.nodes[0]
            .metadata
            .insert("padding".into(), "x".repeat(1 << 20));
        raw.put(
            format!("/micro/registry/big/big-{i}"),
            serde_json::to_vec(&big).unwrap(),
            None,
        )
        .await
        .unwrap();
    }

    let registry = registry(&cluster);
    let listed = registry.list_services().await.unwrap();
    let nodes = |name: &str| {
        listed
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.nodes.len())
            .sum::<usize>()
    };
    assert_eq!((nodes("many"), nodes("big")), (2_500, 5));
    assert_eq!(
        registry.get_service("many").await.unwrap()[0].nodes.len(),
        2_500
    );
    assert_eq!(registry.get_service("big").await.unwrap()[0].nodes.len(), 5);

    // The watch starts from that read and reports what follows.
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    registry
        .register(&service("many", "v1", "many-new"), ttl(30))
        .await
        .unwrap();
    expect(&mut watcher, Action::Create, "many-new").await;
}

/// Streams etcd has opened so far: (watch, lease keep-alive), from its metrics.
fn streams_opened(address: &str) -> (f64, f64) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("etcd metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    let count = |method: &str| {
        body.lines()
            .filter(|l| l.starts_with("grpc_server_started_total{"))
            .filter(|l| l.contains(method) && l.contains("etcdserverpb"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        count("grpc_method=\"Watch\""),
        count("grpc_method=\"LeaseKeepAlive\""),
    )
}

/// A quiet registry keeps its connection: etcd closes one that pings more often
/// than every 5 s (GOAWAY `too_many_pings`), which had the watch read the whole
/// registry again and the keep-alive stream opened again about every 10 s.
#[tokio::test]
async fn a_quiet_etcd_registry_keeps_its_watch_and_keep_alive_streams() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let registry = registry(&cluster);
    registry
        .register(&service("quiet", "v1", "quiet-1"), ttl(90))
        .await
        .unwrap();
    let _watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let address = cluster.addresses()[0].clone();
    let before = streams_opened(&address);
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(
        streams_opened(&address),
        before,
        "(watch, keep-alive) streams opened again while quiet"
    );
}
