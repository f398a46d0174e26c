//! A service and a client over real sockets, found through a memory registry.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::server::Handler;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Error, Request, Service};

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
struct Ping {
    #[prost(string, tag = "1")]
    msg: String,
}
micro_core::json_message!(Ping);

fn echo_handler() -> Handler {
    Handler::new("test.echo", "Echo").unary(
        "Say",
        "Ping",
        "Ping",
        |ctx: Context, req: Ping| async move {
            match req.msg.as_str() {
                "missing" => Err(Error::not_found("test.echo", "no such thing")),
                "who" => Ok(Ping {
                    msg: ctx.metadata().get("x-user").unwrap_or("nobody").to_string(),
                }),
                _ => Ok(Ping {
                    msg: format!("echo: {}", req.msg),
                }),
            }
        },
    )
}

/// Starts the echo service on loopback; returns the registry, a client and a stopper.
async fn start() -> (
    Arc<dyn Registry>,
    Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micro_core::ServiceError>>,
) {
    let registry = support::registry();
    let support::Running { stop, task } = support::start("test.echo", &registry, |s| {
        s.handle(echo_handler()).unwrap()
    })
    .await;
    let client = support::client(&registry);
    (registry, client, stop, task)
}

#[tokio::test]
async fn calls_by_name_with_proto_and_go_micro_paths() {
    let (registry, client, stop, task) = start().await;
    let services = registry.get_service("test.echo").await.unwrap();
    let node = &services[0].nodes[0];
    assert!(node.id.starts_with("test.echo-"), "{}", node.id);
    assert!(node.address.starts_with("127.0.0.1:"), "{}", node.address);
    assert_eq!(services[0].endpoints[0].name, "Echo.Say");

    let reply: Ping = client
        .call(
            "test.echo",
            "/test.echo.Echo/Say",
            Request::new(Ping { msg: "hi".into() }, CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg, "echo: hi");

    // go-micro's gRPC client puts the registry name in the path.
    let reply: Ping = client
        .call(
            "test.echo",
            "/go.micro.srv.other.Echo/Say",
            Request::new(Ping { msg: "go".into() }, CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg, "echo: go");

    let reply: Ping = client
        .call(
            "test.echo",
            "/test.echo.Echo/Say",
            Request::new(
                Ping { msg: "who".into() },
                CallOptions::new().metadata("X-User", "alice"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg, "alice");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        registry
            .get_service("test.echo")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn handler_errors_arrive_whole() {
    let (_registry, client, stop, task) = start().await;
    let err = client
        .call::<_, Ping>(
            "test.echo",
            "/test.echo.Echo/Say",
            Request::new(
                Ping {
                    msg: "missing".into(),
                },
                CallOptions::new(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::not_found("test.echo", "no such thing"));

    let err = client
        .call::<_, Ping>(
            "test.echo",
            "/test.echo.Echo/Nope",
            Request::new(Ping::default(), CallOptions::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 501, "{err}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_service_fails_fast_and_names_the_service() {
    let client = Client::new(
        Arc::new(MemoryRegistry::new()),
        Arc::new(TcpTransport::default()),
    );
    let started = Instant::now();
    let err = client
        .call::<_, Ping>(
            "go.micro.srv.nowhere",
            "/x.Echo/Say",
            Request::new(Ping::default(), CallOptions::new()),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.id, "go.micro.client");
    assert!(err.detail.contains("go.micro.srv.nowhere"), "{err}");
}

#[tokio::test]
async fn a_dead_node_is_skipped_for_a_live_one() {
    let (registry, client, stop, task) = start().await;
    // A node that refuses connections, registered next to the live one.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = micro_core::registry::Service::new("test.echo")
        .version("latest")
        .node(micro_core::registry::Node::new(
            "test.echo-dead",
            format!("127.0.0.1:{dead_port}"),
        ));
    registry.register(&dead, Default::default()).await.unwrap();
    // 100 of 100 calls succeed, on the live node.
    for _ in 0..100 {
        let reply: Ping = client
            .call(
                "test.echo",
                "/test.echo.Echo/Say",
                Request::new(Ping { msg: "x".into() }, CallOptions::new()),
            )
            .await
            .unwrap();
        assert_eq!(reply.msg, "echo: x");
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bad_listen_address_is_an_error_not_a_panic() {
    let service = Service::from_config("test.bad", micro_core::Config::default())
        .address("256.0.0.1:1")
        .registry(Arc::new(MemoryRegistry::new()))
        .handle(echo_handler())
        .unwrap();
    let err = service.run_until(async {}).await.unwrap_err();
    assert!(err.to_string().contains("256.0.0.1:1"), "{err}");
    // The cause is kept, not flattened into text.
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

#[tokio::test]
async fn a_node_that_refused_a_connection_is_passed_over() {
    let (registry, _client, stop, task) = start().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_address = format!("127.0.0.1:{dead_port}");
    let dead = micro_core::registry::Service::new("test.echo")
        .version("latest")
        .node(micro_core::registry::Node::new(
            "test.echo-dead",
            dead_address.clone(),
        ));
    registry.register(&dead, Default::default()).await.unwrap();
    let transport = Arc::new(support::CountingTransport::default());
    let client = Client::new(Arc::clone(&registry), transport.clone());
    for _ in 0..50 {
        let reply: Ping = client
            .call(
                "test.echo",
                "/test.echo.Echo/Say",
                Request::new(Ping { msg: "x".into() }, CallOptions::new()),
            )
            .await
            .unwrap();
        assert_eq!(reply.msg, "echo: x");
    }
    let dials = transport
        .dials
        .lock()
        .unwrap()
        .get(&dead_address)
        .copied()
        .unwrap_or(0);
    assert!(dials <= 1, "the refusing node was dialed {dials} times");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
