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
    for service in ["", "test.Svc"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "{service:?} is not SERVING"); // 1 = SERVING
    }
    svc.stop().await.unwrap();
}
