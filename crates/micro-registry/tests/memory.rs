//! The memory registry: TTL, ordering, slow watchers, versions.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use micro_registry::{
    Action, Error, MemoryRegistry, Node, RegisterOptions, Registry, Service, WatchOptions,
};

fn node(service: &str, version: &str, id: &str) -> Service {
    Service::new(service)
        .version(version)
        .node(Node::new(id, format!("10.0.0.1:{}", 4000 + id.len())))
}

#[tokio::test(start_paused = true)]
async fn a_node_not_renewed_within_its_ttl_disappears_with_one_delete() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let svc = node("greeter", "latest", "greeter-1");
    let ttl = RegisterOptions::default().ttl(Duration::from_secs(3));
    registry.register(&svc, ttl.clone()).await.unwrap();
    assert_eq!(watcher.next().await.unwrap().action, Action::Create);

    // Renewed in time: still there, and no event for an unchanged renewal.
    tokio::time::sleep(Duration::from_secs(2)).await;
    registry.register(&svc, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        registry.get_service("greeter").await.unwrap()[0]
            .nodes
            .len(),
        1
    );

    // Not renewed: gone after the TTL, with exactly one Delete.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let event = watcher.next().await.unwrap();
    assert_eq!(event.action, Action::Delete);
    assert_eq!(event.service.nodes[0].id, "greeter-1");
    assert!(
        registry
            .get_service("greeter")
            .await
            .unwrap_err()
            .is_not_found()
    );
    let more = tokio::time::timeout(Duration::from_secs(60), watcher.next()).await;
    assert!(more.is_err(), "a second event arrived: {more:?}");
}

#[tokio::test]
async fn watchers_see_changes_in_order_and_filtered() {
    let registry = MemoryRegistry::new();
    let mut all = registry.watch(WatchOptions::default()).await.unwrap();
    let mut only_b = registry.watch(WatchOptions::service("b")).await.unwrap();
    let (a, b) = (node("a", "1", "a-1"), node("b", "1", "b-1"));
    registry
        .register(&a, RegisterOptions::default())
        .await
        .unwrap();
    registry
        .register(&b, RegisterOptions::default())
        .await
        .unwrap();
    let mut moved = b.clone();
    moved.nodes[0].address = "10.0.0.2:1".into();
    registry
        .register(&moved, RegisterOptions::default())
        .await
        .unwrap();
    registry.deregister(&a).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = all.next().await.unwrap();
        seen.push((e.action, e.service.name));
    }
    assert_eq!(
        seen,
        vec![
            (Action::Create, "a".to_string()),
            (Action::Create, "b".to_string()),
            (Action::Update, "b".to_string()),
            (Action::Delete, "a".to_string()),
        ]
    );
    assert_eq!(only_b.next().await.unwrap().action, Action::Create);
    assert_eq!(only_b.next().await.unwrap().action, Action::Update);
}

#[tokio::test]
async fn a_watcher_that_never_reads_does_not_block_register() {
    let registry = MemoryRegistry::new();
    let mut idle = registry.watch(WatchOptions::default()).await.unwrap();
    for i in 0..5000 {
        registry
            .register(
                &node("s", "1", &format!("s-{i}")),
                RegisterOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        registry.get_service("s").await.unwrap()[0].nodes.len(),
        5000
    );
    // The idle watcher learns it fell behind, then carries on with new events.
    assert!(matches!(idle.next().await, Err(Error::Lagged(_))));
    assert!(idle.next().await.is_ok());
}

#[tokio::test]
async fn several_nodes_and_versions() {
    let registry = MemoryRegistry::new();
    for (version, id) in [("1.0", "s-1"), ("1.0", "s-2"), ("2.0", "s-3")] {
        registry
            .register(&node("s", version, id), RegisterOptions::default())
            .await
            .unwrap();
    }
    let versions = registry.get_service("s").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        (versions[0].version.as_str(), versions[0].nodes.len()),
        ("1.0", 2)
    );
    assert_eq!(
        (versions[1].version.as_str(), versions[1].nodes.len()),
        ("2.0", 1)
    );
    assert_eq!(registry.list_services().await.unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_use_is_safe() {
    let registry = MemoryRegistry::new();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let svc = node("c", "1", &format!("c-{t}-{i}"));
                registry
                    .register(&svc, RegisterOptions::default())
                    .await
                    .unwrap();
                let _ = registry.get_service("c").await.unwrap();
                if i % 2 == 0 {
                    registry.deregister(&svc).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        registry.get_service("c").await.unwrap()[0].nodes.len(),
        8 * 100
    );
}

#[tokio::test]
async fn invalid_services_and_names_are_clear_errors() {
    let registry = MemoryRegistry::new();
    let err = registry
        .register(&Service::new("x"), RegisterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidService { .. }), "{err}");
    let err = "consul"
        .parse::<micro_registry::RegistryKind>()
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown registry \"consul\""),
        "{err}"
    );
    assert!(err.to_string().contains("mdns, memory"), "{err}");
    assert_eq!(
        micro_registry::RegistryConfig::default()
            .kind("memory".parse().unwrap())
            .build()
            .unwrap()
            .name(),
        "memory"
    );
}
