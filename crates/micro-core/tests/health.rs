//! Health: every service serves the gRPC health protocol, past the auth layer.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use micro_core::layers::TokenAuthLayer;
use support::{Msg, handler, registry, start};

#[tokio::test]
async fn health_is_served_and_follows_the_lifecycle() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let registry = registry();
    let svc = start("healthy", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
            // Probes pass without a token.
            .layer(TokenAuthLayer::new(["t"]))
    })
    .await;
    let address = registry.get_service("healthy").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    // The server as a whole, the registry name, the served proto service.
    for service in ["", "healthy", "test.Svc"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "{service:?} is not SERVING"); // 1 = SERVING
    }
    // Names the server does not serve are unknown.
    for service in ["test.Other", "Svc", "other"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{service:?}");
    }
    svc.stop().await.unwrap();
}

/// On shutdown every name the server answers for turns NOT_SERVING at once, while the
/// server still answers during its grace period.
#[tokio::test]
async fn health_turns_not_serving_on_shutdown_for_every_name() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let registry = registry();
    let svc = start("draining", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
            // The open watches hold the connection until the grace period ends.
            .grace_period(std::time::Duration::from_secs(1))
    })
    .await;
    let address = registry.get_service("draining").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    // A watch on each name: SERVING first, then NOT_SERVING when the service stops.
    let mut watches = Vec::new();
    for service in ["", "draining", "test.Svc"] {
        let mut watch = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, 1, "{service:?} is not SERVING"); // 1 = SERVING
        watches.push((service, watch));
    }
    let stopping = tokio::spawn(svc.stop());
    for (service, mut watch) in watches {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.status, 2, "{service:?} is not NOT_SERVING"); // 2 = NOT_SERVING
    }
    stopping.await.unwrap().unwrap();
}
