//! Client and server behaviour over real sockets: codecs, selection, retries,
//! deadlines, metadata, cancellation, limits, layers, health, shutdown.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::layers::{LogLayer, TokenAuthLayer};
use micro_core::registry::{MemoryRegistry, Registry, WatchOptions};
use micro_core::selector::RoundRobin;
use micro_core::server::Handler;
use micro_core::transport::{MemoryTransport, TcpTransport, Transport};
use micro_core::{CallOptions, Client, Context, Error, Service};
use tokio::sync::oneshot;

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    number: i64,
}

fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        number: 0,
    }
}

/// A running service; stopped (and awaited) by `stop`.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap()
    }
}

async fn start_on(
    name: &str,
    registry: &Arc<dyn Registry>,
    transport: Arc<dyn Transport>,
    setup: impl FnOnce(&mut micro_core::Server),
) -> Running {
    let before = registry
        .get_service(name)
        .await
        .map(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>())
        .unwrap_or(0);
    let mut service = Service::new(name)
        .address("127.0.0.1:0")
        .registry(Arc::clone(registry))
        .transport(transport);
    setup(service.server());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = registry
            .get_service(name)
            .await
            .map(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>())
            .unwrap_or(0);
        if now > before {
            break;
        }
        assert!(Instant::now() < deadline, "{name} never registered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Running {
        stop: Some(stop),
        task,
    }
}

async fn start(
    name: &str,
    registry: &Arc<dyn Registry>,
    setup: impl FnOnce(&mut micro_core::Server),
) -> Running {
    start_on(name, registry, Arc::new(TcpTransport::default()), setup).await
}

fn registry() -> Arc<dyn Registry> {
    Arc::new(MemoryRegistry::new())
}

fn client(registry: &Arc<dyn Registry>) -> Client {
    Client::new(Arc::clone(registry), Arc::new(TcpTransport::default()))
}

/// A handler answering `reply(ctx, request)`.
fn handler<F, Fut>(name: &str, reply: F) -> Handler
where
    F: Fn(Context, Msg) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Msg, Error>> + Send + 'static,
{
    Handler::new("test", name).unary("Call", "Msg", "Msg", reply)
}

const PATH: &str = "/test.Svc/Call";

#[tokio::test]
async fn json_and_protobuf_reach_the_same_handler() {
    let registry = registry();
    let svc = start("svc", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move {
            Ok(Msg {
                text: m.text.to_uppercase(),
                number: m.number * 2,
            })
        }))
        .unwrap();
    })
    .await;
    let client = client(&registry);
    let request = Msg {
        text: "shippy".into(),
        number: 21,
    };
    let proto: Msg = client
        .call("svc", PATH, request.clone(), CallOptions::new())
        .await
        .unwrap();
    let json: Msg = client
        .call("svc", PATH, request, CallOptions::new().json())
        .await
        .unwrap();
    assert_eq!(proto, json);
    assert_eq!((json.text.as_str(), json.number), ("SHIPPY", 42));
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let registry = registry();
    let mut nodes = Vec::new();
    for tag in ["a", "b", "c"] {
        nodes.push(
            start("rr", &registry, move |s| {
                s.handle(handler("Svc", move |_, _| async move { Ok(msg(tag)) }))
                    .unwrap();
            })
            .await,
        );
    }
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let reply: Msg = client
            .call("rr", PATH, msg(""), CallOptions::new())
            .await
            .unwrap();
        *counts.entry(reply.text).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    for node in nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test]
async fn unavailable_is_retried_elsewhere_and_invalid_argument_is_not() {
    let registry = registry();
    let busy_calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&busy_calls);
    let busy = start("retry", &registry, move |s| {
        s.handle(handler("Svc", move |_, m: Msg| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if m.text == "bad" {
                    Err(Error::bad_request("retry", "bad input"))
                } else {
                    Err(Error::service_unavailable("retry", "overloaded"))
                }
            }
        }))
        .unwrap();
    })
    .await;
    let good = start("retry", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move {
            if m.text == "bad" {
                Err(Error::bad_request("retry", "bad input"))
            } else {
                Ok(msg("ok"))
            }
        }))
        .unwrap();
    })
    .await;
    // Round robin, so that the calls below reach both nodes for certain.
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    for _ in 0..20 {
        let reply: Msg = client
            .call("retry", PATH, msg("x"), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.text, "ok");
    }
    let before = busy_calls.load(Ordering::SeqCst);
    assert!(
        before <= 20,
        "the busy node was tried {before} times for 20 calls"
    );
    // INVALID_ARGUMENT is the caller's problem: one attempt, no retry.
    let mut attempts = 0;
    for _ in 0..10 {
        let before = busy_calls.load(Ordering::SeqCst);
        let err = client
            .call::<_, Msg>("retry", PATH, msg("bad"), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code, 400);
        attempts += busy_calls.load(Ordering::SeqCst) - before;
    }
    // Every other call starts on the busy node and ends there: 5, not 10 or more.
    assert_eq!(attempts, 5, "an INVALID_ARGUMENT call was retried");
    busy.stop().await.unwrap();
    good.stop().await.unwrap();
}

#[tokio::test]
async fn retries_never_outlive_the_deadline() {
    let registry = registry();
    // A registered node that refuses every connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = micro_core::registry::Service::new("dead").with_node(
        micro_core::registry::Node::new("dead-1", format!("127.0.0.1:{port}")),
    );
    registry.register(&dead, Default::default()).await.unwrap();
    let started = Instant::now();
    let err = client(&registry)
        .call::<_, Msg>(
            "dead",
            PATH,
            msg(""),
            CallOptions::new().timeout(Duration::from_millis(700)),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800), "{took:?}");
    assert!(err.code == 503 || err.code == 408, "{err}");
}

#[tokio::test]
async fn a_handler_sees_the_callers_address_with_and_without_layers() {
    let registry = registry();
    let echo_remote = || {
        handler("Where", |ctx: Context, _| async move {
            Ok(msg(ctx.remote().unwrap_or("unknown")))
        })
    };
    let plain = start("plain", &registry, |s| {
        s.handle(echo_remote()).unwrap();
    })
    .await;
    let layered = start("layered", &registry, |s| {
        s.layer(LogLayer).handle(echo_remote()).unwrap();
    })
    .await;
    let client = client(&registry);
    for name in ["plain", "layered"] {
        let reply: Msg = client
            .call(name, "/test.Where/Call", msg(""), CallOptions::new())
            .await
            .unwrap();
        // The client's end of the connection: loopback, an ephemeral port.
        let address: std::net::SocketAddr = reply
            .text
            .parse()
            .unwrap_or_else(|e| panic!("{name}: remote {:?} is not an address: {e}", reply.text));
        assert!(address.ip().is_loopback(), "{name}: {address}");
        assert_ne!(address.port(), 0, "{name}");
    }
    plain.stop().await.unwrap();
    layered.stop().await.unwrap();
}

#[tokio::test]
async fn deadline_and_metadata_travel_with_nested_calls() {
    let registry = registry();
    // What the inner handler saw: time remaining, and the x-user metadata.
    type Seen = Option<(Duration, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = start("inner", &registry, move |s| {
        s.handle(handler("Inner", move |ctx: Context, _| {
            let record = Arc::clone(&record);
            async move {
                let remaining = ctx.remaining().expect("a deadline");
                *record.lock().unwrap() =
                    Some((remaining, ctx.metadata().get("x-user").map(String::from)));
                Ok(msg("inner"))
            }
        }))
        .unwrap();
    })
    .await;
    let downstream = client(&registry);
    let outer = start("outer", &registry, move |s| {
        s.handle(handler("Outer", move |ctx: Context, _| {
            let downstream = downstream.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                downstream
                    .call("inner", "/test.Inner/Call", msg(""), ctx.call_options())
                    .await
            }
        }))
        .unwrap();
    })
    .await;
    let reply: Msg = client(&registry)
        .call(
            "outer",
            "/test.Outer/Call",
            msg(""),
            CallOptions::new()
                .timeout(Duration::from_secs(2))
                .metadata("X-User", "alice"),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "inner");
    let (remaining, user) = seen.lock().unwrap().clone().unwrap();
    // What was left of the caller's 2 s after the outer handler spent 300 ms: never the
    // client's 30 s default.
    assert!(remaining <= Duration::from_millis(1750), "{remaining:?}");
    assert!(remaining >= Duration::from_millis(1000), "{remaining:?}");
    assert_eq!(user.as_deref(), Some("alice"));
    inner.stop().await.unwrap();
    outer.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_service_fails_within_50ms() {
    let client = client(&registry());
    let started = Instant::now();
    let err = client
        .call::<_, Msg>("nowhere", PATH, msg(""), CallOptions::new())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.detail, "service nowhere: not found");
}

/// A handler that sleeps, and reports (through `cancelled`) whether its context saw
/// the call abandoned.
fn sleepy(cancelled: Arc<AtomicUsize>) -> Handler {
    handler("Sleepy", move |ctx: Context, _| {
        let cancelled = Arc::clone(&cancelled);
        async move {
            let watcher = ctx.clone();
            tokio::spawn(async move {
                watcher.cancelled().await;
                cancelled.fetch_add(1, Ordering::SeqCst);
            });
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(msg("late"))
        }
    })
}

#[tokio::test]
async fn deadline_exceeded_is_408_and_the_handler_sees_it() {
    let registry = registry();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let svc = start("sleepy", &registry, move |s| {
        s.handle(sleepy(flag)).unwrap()
    })
    .await;
    let started = Instant::now();
    let err = client(&registry)
        .call::<_, Msg>(
            "sleepy",
            "/test.Sleepy/Call",
            msg(""),
            CallOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    assert!(started.elapsed() < Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_call_is_seen_as_cancelled_by_the_handler() {
    let registry = registry();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let svc = start("sleepy", &registry, move |s| {
        s.handle(sleepy(flag)).unwrap()
    })
    .await;
    let client = client(&registry);
    let call = tokio::spawn(async move {
        client
            .call::<_, Msg>("sleepy", "/test.Sleepy/Call", msg(""), CallOptions::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    call.abort(); // the caller goes away mid-call
    let deadline = Instant::now() + Duration::from_secs(2);
    while cancelled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the handler never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_never_handled() {
    let registry = registry();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let svc = start("small", &registry, move |s| {
        s.set_max_message_size(1024);
        s.handle(handler("Svc", move |_, m: Msg| {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(m)
            }
        }))
        .unwrap();
    })
    .await;
    let client = client(&registry);
    let ok: Msg = client
        .call("small", PATH, msg(&"x".repeat(500)), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(ok.text.len(), 500);
    let err = client
        .call::<_, Msg>("small", PATH, msg(&"x".repeat(4096)), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code, 429, "{err}");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn the_auth_layer_admits_only_callers_with_a_token() {
    let registry = registry();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let svc = start("secure", &registry, move |s| {
        s.handle(handler("Svc", move |_, m: Msg| {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(m)
            }
        }))
        .unwrap();
        s.layer(TokenAuthLayer::new(["s3cret"])).layer(LogLayer);
    })
    .await;
    let anonymous = client(&registry);
    let err = anonymous
        .call::<_, Msg>("secure", PATH, msg("hi"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code, 401, "{err}");
    let wrong = CallOptions::new().metadata("authorization", "Bearer nope");
    assert_eq!(
        anonymous
            .call::<_, Msg>("secure", PATH, msg("hi"), wrong)
            .await
            .unwrap_err()
            .code,
        401
    );
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    // A client layer that adds the token to every call.
    let authed = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .layer(tower::util::MapRequestLayer::new(
            |mut request: http::Request<tonic::body::Body>| {
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("Bearer s3cret"),
                );
                request
            },
        ))
        .build();
    let reply: Msg = authed
        .call("secure", PATH, msg("hi"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.text, "hi");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn health_is_served_and_follows_the_lifecycle() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let registry = registry();
    let svc = start("healthy", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap();
        s.layer(TokenAuthLayer::new(["t"])); // probes pass without a token
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

/// A memory registry that, when asked to deregister a node, first checks whether
/// the node still accepts connections.
#[derive(Debug, Default)]
struct ProbingRegistry {
    memory: MemoryRegistry,
    listening_at_deregister: Mutex<Option<bool>>,
}

#[async_trait::async_trait]
impl Registry for ProbingRegistry {
    async fn register(
        &self,
        s: &micro_core::registry::Service,
        o: micro_core::registry::RegisterOptions,
    ) -> Result<(), micro_core::registry::Error> {
        self.memory.register(s, o).await
    }
    async fn deregister(
        &self,
        s: &micro_core::registry::Service,
    ) -> Result<(), micro_core::registry::Error> {
        let open = tokio::net::TcpStream::connect(&s.nodes[0].address)
            .await
            .is_ok();
        *self.listening_at_deregister.lock().unwrap() = Some(open);
        self.memory.deregister(s).await
    }
    async fn get_service(
        &self,
        n: &str,
    ) -> Result<Vec<micro_core::registry::Service>, micro_core::registry::Error> {
        self.memory.get_service(n).await
    }
    async fn list_services(
        &self,
    ) -> Result<Vec<micro_core::registry::Service>, micro_core::registry::Error> {
        self.memory.list_services().await
    }
    async fn watch(
        &self,
        o: WatchOptions,
    ) -> Result<micro_core::registry::Watcher, micro_core::registry::Error> {
        self.memory.watch(o).await
    }
    fn name(&self) -> &'static str {
        "probing"
    }
}

#[tokio::test]
async fn shutdown_deregisters_first_and_lets_in_flight_calls_finish() {
    let probing = Arc::new(ProbingRegistry::default());
    let registry: Arc<dyn Registry> = probing.clone();
    let svc = start("graceful", &registry, |s| {
        s.handle(handler("Svc", |_, _| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(msg("finished"))
        }))
        .unwrap();
    })
    .await;
    let address = registry.get_service("graceful").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let client = client(&registry);
    let in_flight = tokio::spawn(async move {
        client
            .call::<_, Msg>("graceful", PATH, msg(""), CallOptions::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.stop().await.unwrap();

    // The node left the registry while its listener was still open...
    assert_eq!(*probing.listening_at_deregister.lock().unwrap(), Some(true));
    assert!(
        registry
            .get_service("graceful")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // ...the call in flight finished...
    assert_eq!(in_flight.await.unwrap().unwrap().text, "finished");
    // ...and then the listener closed.
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn connections_to_nodes_that_leave_are_closed() {
    let registry = registry();
    let a = start("pool", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let b = start("pool", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .selector(RoundRobin::new())
        .build();
    for _ in 0..4 {
        let _: Msg = client
            .call("pool", PATH, msg(""), CallOptions::new())
            .await
            .unwrap();
    }
    assert_eq!(client.connections(), 2);
    a.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while client.connections() != 1 {
        assert!(
            Instant::now() < deadline,
            "still {} connections",
            client.connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.stop().await.unwrap();
}

#[tokio::test]
async fn the_register_ttl_must_exceed_the_interval() {
    let service = Service::new("ttl")
        .registry(registry())
        .register_interval(Duration::from_secs(30), Duration::from_secs(30));
    let err = service.run_until(async {}).await.unwrap_err();
    assert!(
        err.detail
            .contains("must be longer than the register interval"),
        "{err}"
    );
}

#[tokio::test]
async fn the_memory_transport_carries_calls_without_sockets() {
    let registry = registry();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let svc = start_on("mem", &registry, Arc::clone(&transport), |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap();
    })
    .await;
    let node = registry.get_service("mem").await.unwrap()[0].nodes[0].clone();
    assert!(node.address.starts_with("memory:"), "{}", node.address);
    assert_eq!(node.metadata["transport"], "memory");
    let client = Client::new(Arc::clone(&registry), transport);
    let reply: Msg = client
        .call("mem", PATH, msg("no sockets"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.text, "no sockets");
    svc.stop().await.unwrap();
}
