//! A service and a client over real sockets, found through a memory registry.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::server::Handler;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Error, Service};

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
struct Ping {
    #[prost(string, tag = "1")]
    msg: String,
}

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
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut service = Service::new("test.echo")
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry));
    service.server().handle(echo_handler()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while registry.get_service("test.echo").await.is_err() {
        assert!(Instant::now() < deadline, "service never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default()));
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
            Ping { msg: "hi".into() },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg, "echo: hi");

    // go-micro's gRPC client puts the registry name in the path.
    let reply: Ping = client
        .call(
            "test.echo",
            "/go.micro.srv.other.Echo/Say",
            Ping { msg: "go".into() },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg, "echo: go");

    let reply: Ping = client
        .call(
            "test.echo",
            "/test.echo.Echo/Say",
            Ping { msg: "who".into() },
            CallOptions::new().metadata("X-User", "alice"),
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
            Ping {
                msg: "missing".into(),
            },
            CallOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::not_found("test.echo", "no such thing"));

    let err = client
        .call::<_, Ping>(
            "test.echo",
            "/test.echo.Echo/Nope",
            Ping::default(),
            CallOptions::new(),
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
            Ping::default(),
            CallOptions::new(),
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
        .with_version("latest")
        .with_node(micro_core::registry::Node::new(
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
                Ping { msg: "x".into() },
                CallOptions::new(),
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
    let mut service = Service::new("test.bad")
        .address("256.0.0.1:1")
        .registry(Arc::new(MemoryRegistry::new()));
    service.server().handle(echo_handler()).unwrap();
    let err = service.run_until(async {}).await.unwrap_err();
    assert!(err.detail.contains("256.0.0.1:1"), "{err}");
}

/// TCP, counting dials per address.
#[derive(Debug, Default)]
struct CountingTransport {
    tcp: TcpTransport,
    dials: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl micro_core::transport::Transport for CountingTransport {
    async fn listen(
        &self,
        address: &str,
    ) -> Result<Box<dyn micro_core::transport::Listener>, micro_core::transport::TransportError>
    {
        self.tcp.listen(address).await
    }
    async fn dial(
        &self,
        address: &str,
    ) -> Result<micro_core::transport::BoxedIo, micro_core::transport::TransportError> {
        *self
            .dials
            .lock()
            .unwrap()
            .entry(address.to_string())
            .or_default() += 1;
        self.tcp.dial(address).await
    }
    fn name(&self) -> &'static str {
        "counting-tcp"
    }
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
        .with_version("latest")
        .with_node(micro_core::registry::Node::new(
            "test.echo-dead",
            dead_address.clone(),
        ));
    registry.register(&dead, Default::default()).await.unwrap();
    let transport = Arc::new(CountingTransport::default());
    let client = Client::new(Arc::clone(&registry), transport.clone());
    for _ in 0..50 {
        let reply: Ping = client
            .call(
                "test.echo",
                "/test.echo.Echo/Say",
                Ping { msg: "x".into() },
                CallOptions::new(),
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
