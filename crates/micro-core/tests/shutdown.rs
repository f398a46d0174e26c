//! Shutdown: a service leaves the registry before it stops listening and lets calls in
//! flight finish, and clients close their connections to nodes that left. It refuses
//! new calls at once, and ends within the grace period and a second whatever is
//! down: the registry, the broker, a call that never ends, start-up itself.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::broker::{
    Broker, BrokerError, Handler as BrokerHandler, Message as BrokerMessage, SubscribeOptions,
    Subscriber,
};
use micro_core::registry::{MemoryRegistry, RegisterOptions, Registry, WatchOptions};
use micro_core::selector::RoundRobin;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Request, Service};
use prost::Message as _;
use support::{Msg, PATH, client, handler, msg, registry, start};

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
        .unwrap()
    })
    .await;
    let address = registry.get_service("graceful").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let client = client(&registry);
    let in_flight = tokio::spawn(async move {
        client
            .call::<_, Msg>("graceful", PATH, Request::new(msg(""), CallOptions::new()))
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
            .call("pool", PATH, Request::new(msg(""), CallOptions::new()))
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

/// What may be down at shutdown.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Deregistration never answers (etcd down).
    registry: bool,
    /// The broker's disconnect never answers (NATS down).
    broker: bool,
}

/// A memory registry whose deregister can hang forever, or wait for a gate.
#[derive(Debug, Default)]
struct FaultyRegistry {
    memory: MemoryRegistry,
    hang: bool,
    gate: Option<Arc<tokio::sync::Notify>>,
    deregistering: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Registry for FaultyRegistry {
    async fn register(
        &self,
        s: &micro_core::registry::Service,
        o: RegisterOptions,
    ) -> Result<(), micro_core::registry::Error> {
        self.memory.register(s, o).await
    }
    async fn deregister(
        &self,
        s: &micro_core::registry::Service,
    ) -> Result<(), micro_core::registry::Error> {
        self.deregistering.notify_one();
        if self.hang {
            std::future::pending::<()>().await;
        }
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
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
        "faulty"
    }
}

/// A broker whose disconnect (and, if asked, connect) never answers.
#[derive(Debug, Default)]
struct HangingBroker {
    hang_connect: bool,
}

#[async_trait::async_trait]
impl Broker for HangingBroker {
    async fn connect(&self) -> Result<(), BrokerError> {
        if self.hang_connect {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn disconnect(&self) -> Result<(), BrokerError> {
        std::future::pending().await
    }
    async fn publish(
        &self,
        _: &str,
        _: BrokerMessage,
        _: micro_core::broker::PublishOptions,
    ) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn subscribe(
        &self,
        topic: &str,
        _: BrokerHandler,
        _: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError> {
        Ok(Subscriber::new(topic, || {}))
    }
    fn name(&self) -> &'static str {
        "hanging"
    }
}

/// Starts `name` with `faults`, `grace`, and a handler that takes `work`; returns
/// the service and its address.
async fn start_faulty(
    name: &str,
    faults: Faults,
    grace: Option<Duration>,
    work: Duration,
) -> (support::Running, Arc<dyn Registry>, String) {
    let registry: Arc<dyn Registry> = Arc::new(FaultyRegistry {
        hang: faults.registry,
        ..FaultyRegistry::default()
    });
    let svc = start(name, &registry, move |s| {
        let s = if faults.broker {
            s.broker(Arc::new(HangingBroker::default()))
                .subscribe("events", |_: micro_core::Context, _: Msg| async { Ok(()) })
        } else {
            s
        };
        let s = match grace {
            Some(grace) => s.grace_period(grace),
            None => s,
        };
        s.handle(handler("Svc", move |_, m: Msg| async move {
            tokio::time::sleep(work).await;
            Ok(m)
        }))
        .unwrap()
    })
    .await;
    let address = registry.get_service(name).await.unwrap()[0].nodes[0]
        .address
        .clone();
    (svc, registry, address)
}

/// Stops `svc` and returns how long that took.
async fn timed_stop(svc: support::Running) -> Duration {
    let began = Instant::now();
    svc.stop().await.unwrap();
    let took = began.elapsed();
    eprintln!("shutdown took {took:?}");
    took
}

#[tokio::test]
async fn a_registry_that_never_deregisters_cannot_hold_up_shutdown() {
    let grace = Duration::from_secs(1);
    let faults = Faults {
        registry: true,
        ..Faults::default()
    };
    let (svc, _registry, address) =
        start_faulty("stuck-registry", faults, Some(grace), Duration::ZERO).await;
    let took = timed_stop(svc).await;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn a_broker_that_never_disconnects_cannot_hold_up_shutdown() {
    let grace = Duration::from_secs(1);
    let faults = Faults {
        broker: true,
        ..Faults::default()
    };
    let (svc, registry, _) =
        start_faulty("stuck-broker", faults, Some(grace), Duration::ZERO).await;
    let took = timed_stop(svc).await;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    // It still left the registry.
    assert!(
        registry
            .get_service("stuck-broker")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn a_call_that_outlasts_the_grace_period_is_cut_off() {
    let grace = Duration::from_millis(500);
    let (svc, registry, _) = start_faulty(
        "stuck-call",
        Faults::default(),
        Some(grace),
        Duration::from_secs(3600),
    )
    .await;
    let client = client(&registry);
    let in_flight = tokio::spawn(async move {
        client
            .call::<_, Msg>(
                "stuck-call",
                PATH,
                Request::new(msg(""), CallOptions::new()),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = timed_stop(svc).await;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut-off call succeeded"
    );
}

/// What operators saw with etcd and NATS down, and a peer mid-call, with the default
/// grace period of 5 s: now at most 6 s.
#[tokio::test]
async fn everything_down_at_once_still_stops_within_the_grace_period_and_a_second() {
    let faults = Faults {
        registry: true,
        broker: true,
    };
    let (svc, _registry, address) =
        start_faulty("all-stuck", faults, None, Duration::from_secs(3600)).await;
    // A client that is not micro's: it knows the address, not the registry.
    let channel = raw::channel(&address).await;
    let in_flight = tokio::spawn(raw::unary(channel, PATH, msg("").encode_to_vec()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = timed_stop(svc).await;
    let grace = micro_core::server::DEFAULT_GRACE_PERIOD;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    assert!(in_flight.await.unwrap().is_err());
}

#[tokio::test]
async fn a_call_in_flight_finishes_when_it_is_within_the_grace_period_despite_faults() {
    let faults = Faults {
        registry: true,
        broker: true,
    };
    let grace = Duration::from_secs(2);
    let (svc, registry, _) = start_faulty(
        "slow-call",
        faults,
        Some(grace),
        Duration::from_millis(1500),
    )
    .await;
    let client = client(&registry);
    let in_flight = tokio::spawn(async move {
        client
            .call::<_, Msg>(
                "slow-call",
                PATH,
                Request::new(msg("done"), CallOptions::new()),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = timed_stop(svc).await;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    assert_eq!(in_flight.await.unwrap().unwrap().text, "done");
}

#[tokio::test]
async fn new_calls_are_refused_as_unavailable_once_shutdown_starts() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let faulty = Arc::new(FaultyRegistry {
        gate: Some(Arc::clone(&gate)),
        ..FaultyRegistry::default()
    });
    let registry: Arc<dyn Registry> = faulty.clone();
    let svc = start("refusing", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let address = registry.get_service("refusing").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let channel = raw::channel(&address).await;
    let body = msg("hello").encode_to_vec();
    assert_eq!(
        raw::unary(channel.clone(), PATH, body.clone())
            .await
            .unwrap(),
        body
    );

    let stopping = tokio::spawn(svc.stop());
    // Shutdown has started: the service is telling the registry.
    faulty.deregistering.notified().await;
    let status = raw::unary(channel.clone(), PATH, body.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // A new connection is refused the same way while the listener is still open.
    let status = raw::unary(raw::channel(&address).await, PATH, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    gate.notify_one();
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_during_start_up_is_bounded_too() {
    let registry = registry();
    let grace = Duration::from_secs(1);
    let service = Service::from_config("never-started", micro_core::Config::default())
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry))
        .broker(Arc::new(HangingBroker { hang_connect: true }))
        .grace_period(grace);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let took = began.elapsed();
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
    assert!(
        registry
            .get_service("never-started")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// The operators' case with a real NATS: the server goes down while the service
/// runs, and the client is trying to reconnect (where its disconnect waits for ever);
/// shutdown still ends within the grace period and a second.
#[cfg(feature = "nats")]
#[tokio::test]
async fn a_nats_server_that_is_down_cannot_hold_up_shutdown() {
    use micro_core::broker::NatsBroker;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nats = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut nats = match nats {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var("MICRO_REQUIRE_NATS").is_err(),
                "nats-server is required (apt-get install nats-server): {e}"
            );
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let grace = Duration::from_secs(2);
    let registry = registry();
    let broker = Arc::new(NatsBroker::new(format!("nats://127.0.0.1:{port}")));
    let svc = start("nats-gone", &registry, move |s| {
        s.broker(broker)
            .grace_period(grace)
            .subscribe("events", |_: micro_core::Context, _: Msg| async { Ok(()) })
            .handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let _ = nats.kill();
    let _ = nats.wait();
    // Long enough for the client to see it and start reconnecting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = timed_stop(svc).await;
    assert!(took <= grace + Duration::from_secs(1), "took {took:?}");
}
