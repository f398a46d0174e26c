//! Clients built from configuration, and the options of the client a service hands
//! out (`Service::client_options`): layers, timeout, options that add up. Memory
//! registry and loopback TCP only.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::layers::TokenAuthLayer;
use micro_core::registry::{Registry, RegistryKind};
use micro_core::{
    CallOptions, Client, ClientBuilder, Config, Context, ErrorKind, Request, Service, ServiceError,
};
use support::{Msg, PATH, client, handler, msg, registry, start};
use tower::util::MapRequestLayer;

/// Adds the token `TokenAuthLayer::new(["s3cret"])` admits.
fn bearer(builder: ClientBuilder) -> ClientBuilder {
    builder.layer(MapRequestLayer::new(
        |mut request: http::Request<tonic::body::Body>| {
            request.headers_mut().insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static("Bearer s3cret"),
            );
            request
        },
    ))
}

/// A service that calls others, never run: only its client is used.
fn caller(registry: &Arc<dyn Registry>) -> Service {
    Service::from_config("caller", Config::default()).registry(Arc::clone(registry))
}

const SLOW: &str = "/test.Slow/Call";

async fn start_secure(registry: &Arc<dyn Registry>) -> support::Running {
    start("secure", registry, |s| {
        s.handle(handler("Svc", |_: Context, m: Msg| async move { Ok(m) }))
            .unwrap()
            .handle(handler("Slow", |_: Context, m: Msg| async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(m)
            }))
            .unwrap()
            .layer(TokenAuthLayer::new(["s3cret"]))
    })
    .await
}

#[tokio::test]
async fn a_services_client_has_the_layers_its_options_add() {
    let registry = registry();
    let secure = start_secure(&registry).await;

    let err = caller(&registry)
        .client()
        .call::<_, Msg>("secure", PATH, msg("hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let reply: Msg = caller(&registry)
        .client_options(bearer)
        .client()
        .call("secure", PATH, msg("hi"))
        .await
        .unwrap();
    assert_eq!(reply.text, "hi");

    // Options set before the registry are kept when it changes.
    let reply: Msg = Service::from_config("caller", Config::default())
        .client_options(bearer)
        .registry(Arc::clone(&registry))
        .client()
        .call("secure", PATH, msg("again"))
        .await
        .unwrap();
    assert_eq!(reply.text, "again");
    secure.stop().await.unwrap();
}

#[tokio::test]
async fn options_add_up_and_the_timeout_is_the_calls_default() {
    let registry = registry();
    let secure = start_secure(&registry).await;
    let service = caller(&registry)
        .client_options(bearer)
        .client_options(|b| b.request_timeout(Duration::from_millis(200)).retries(0));
    let client = service.client();

    // The token from the first options, the timeout from the second.
    let started = Instant::now();
    let err = client
        .call::<_, Msg>("secure", SLOW, msg("hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");

    // A call's own timeout still wins over the client's default.
    let err = client
        .call::<_, Msg>(
            "secure",
            SLOW,
            Request::new(
                msg("hi"),
                CallOptions::new().timeout(Duration::from_millis(50)),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    // The client is built once; clones share it.
    let _ = client
        .call::<_, Msg>("secure", PATH, msg("hi"))
        .await
        .unwrap();
    assert_eq!(service.client().connections(), 1);
    secure.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_from_configuration_needs_no_service() {
    let mut config = Config::default();
    config.registry.kind = RegistryKind::Memory;
    let client = Client::from_config(&config).unwrap();
    assert_eq!(client.registry().name(), "memory");

    // Its registry knows nothing: go-micro's "service ...: not found", a 500.
    let err = client
        .call::<_, Msg>("go.micro.srv.nowhere", PATH, msg("hi"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InternalServerError, "{err}");
    assert!(err.detail.contains("not found"), "{err}");

    let client = ClientBuilder::from_config(&config)
        .unwrap()
        .request_timeout(Duration::from_secs(1))
        .build();
    assert_eq!(client.connections(), 0);
}

#[tokio::test]
async fn a_registry_that_cannot_be_built_is_the_error() {
    let mut config = Config::default();
    config.registry.kind = RegistryKind::Etcd;
    // Without the feature, etcd is not in the build; with it, this is no address.
    config.registry.addresses = vec!["http://[not an address".into()];
    match Client::from_config(&config) {
        Err(ServiceError::Registry(_)) => {}
        other => panic!("expected a registry error, got {other:?}"),
    }
    // A plain client still works next to it.
    let _ = client(&registry());
}
