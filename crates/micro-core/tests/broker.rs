//! Brokers over real sockets: the registry broker (no server), and NATS against a
//! real nats-server (feature `nats`).

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use micro_core::broker::registry::BROKER_SERVICE;
use micro_core::broker::{
    Broker, BrokerError, Event, Message, PublishOptions, RegistryBroker, SubscribeOptions, handler,
};
use micro_core::event::Publisher;
use micro_core::registry::{
    Error as RegistryError, MemoryRegistry, Node, RegisterOptions, Registry,
    Service as RegistryService, WatchOptions, Watcher,
};
use micro_core::transport::TcpTransport;
use micro_core::{Context, Error, Service};

fn counter(count: Arc<AtomicUsize>) -> micro_core::broker::Handler {
    handler(move |_: Event| {
        let count = Arc::clone(&count);
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn registry_broker(registry: &Arc<dyn Registry>) -> RegistryBroker {
    RegistryBroker::new(Arc::clone(registry), Arc::new(TcpTransport::default()))
}

fn message(body: &str) -> Message {
    Message {
        body: body.as_bytes().to_vec(),
        ..Message::default()
    }
}

#[tokio::test]
async fn registry_broker_fans_out_and_delivers_once_per_queue_group() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    // Three processes' worth of brokers: two subscribe, one publishes.
    let (a, b, publisher) = (
        registry_broker(&registry),
        registry_broker(&registry),
        registry_broker(&registry),
    );
    for broker in [&a, &b, &publisher] {
        broker.connect().await.unwrap();
    }
    let (fan_a, fan_b, queue_a, queue_b, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let _subs = [
        a.subscribe(
            "orders",
            counter(Arc::clone(&fan_a)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap(),
        b.subscribe(
            "orders",
            counter(Arc::clone(&fan_b)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap(),
        a.subscribe(
            "orders",
            counter(Arc::clone(&queue_a)),
            SubscribeOptions::queue("billing"),
        )
        .await
        .unwrap(),
        b.subscribe(
            "orders",
            counter(Arc::clone(&queue_b)),
            SubscribeOptions::queue("billing"),
        )
        .await
        .unwrap(),
        b.subscribe(
            "refunds",
            counter(Arc::clone(&other)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap(),
    ];
    for i in 0..20 {
        publisher
            .publish(
                "orders",
                message(&format!("order {i}")),
                PublishOptions::default(),
            )
            .await
            .unwrap();
    }
    eventually("fan-out", || {
        fan_a.load(Ordering::SeqCst) == 20 && fan_b.load(Ordering::SeqCst) == 20
    })
    .await;
    eventually("queue", || {
        queue_a.load(Ordering::SeqCst) + queue_b.load(Ordering::SeqCst) == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        queue_a.load(Ordering::SeqCst) + queue_b.load(Ordering::SeqCst),
        20,
        "a queue member got a duplicate"
    );
    assert!(queue_a.load(Ordering::SeqCst) > 0 && queue_b.load(Ordering::SeqCst) > 0);
    assert_eq!(other.load(Ordering::SeqCst), 0);
    // Nobody on a topic: publishing is not an error.
    publisher
        .publish("nobody", message("x"), PublishOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_slow_subscriber_holds_up_neither_the_publisher_nor_the_others() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (slow_broker, fast_broker, publisher) = (
        registry_broker(&registry),
        registry_broker(&registry),
        registry_broker(&registry),
    );
    for broker in [&slow_broker, &fast_broker, &publisher] {
        broker.connect().await.unwrap();
    }
    let (release, released) = tokio::sync::watch::channel(false);
    let slow = handler(move |_: Event| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok(())
        }
    });
    let fast = Arc::new(AtomicUsize::new(0));
    let _subs = [
        slow_broker
            .subscribe("ticks", slow, SubscribeOptions::default())
            .await
            .unwrap(),
        fast_broker
            .subscribe(
                "ticks",
                counter(Arc::clone(&fast)),
                SubscribeOptions::default(),
            )
            .await
            .unwrap(),
    ];
    let total = micro_core::broker::SUBSCRIBER_BUFFER + 200;
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..total {
        match publisher
            .publish("ticks", message(&i.to_string()), PublishOptions::default())
            .await
        {
            Ok(()) => {}
            Err(BrokerError::Delivery {
                failed: 1, of: 2, ..
            }) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // The slow subscriber's buffer filled; the rest was refused, counted, and reported.
    assert!(refused >= 190, "refused {refused}");
    assert_eq!(slow_broker.dropped(), refused as u64);
    eventually("the fast subscriber got everything", || {
        fast.load(Ordering::SeqCst) == total
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let _ = release.send(true);
}

#[tokio::test]
async fn a_subscriber_that_restarts_receives_again_and_unsubscribing_stops_delivery() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let publisher = registry_broker(&registry);
    publisher.connect().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));

    let first = registry_broker(&registry);
    first.connect().await.unwrap();
    let sub = first
        .subscribe(
            "t",
            counter(Arc::clone(&count)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    publisher
        .publish("t", message("1"), PublishOptions::default())
        .await
        .unwrap();
    eventually("first delivery", || count.load(Ordering::SeqCst) == 1).await;
    sub.unsubscribe();
    eventually("deregistration", || {
        futures::executor::block_on(registry.get_service("micro.broker")).is_err()
    })
    .await;
    publisher
        .publish("t", message("2"), PublishOptions::default())
        .await
        .unwrap();
    first.disconnect().await.unwrap();

    // The subscriber process comes back with a new broker.
    let second = registry_broker(&registry);
    second.connect().await.unwrap();
    let _sub = second
        .subscribe(
            "t",
            counter(Arc::clone(&count)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    // Publishers learn of subscriptions through the registry's watch (milliseconds).
    tokio::time::sleep(Duration::from_millis(20)).await;
    publisher
        .publish("t", message("3"), PublishOptions::default())
        .await
        .unwrap();
    eventually("delivery after restart", || {
        count.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "message 2 must not have been delivered"
    );
}

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
struct Created {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int32, tag = "2")]
    weight: i32,
}
micro_core::json_message!(Created);

#[tokio::test]
async fn typed_events_between_services() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    // Each event, with its Micro-Id header.
    type Received = Vec<(Created, Option<String>)>;
    let received: Arc<std::sync::Mutex<Received>> = Arc::default();
    let record = Arc::clone(&received);
    let service = Service::from_config("listener", micro_core::Config::default())
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry))
        .subscribe("created", move |ctx: Context, created: Created| {
            let record = Arc::clone(&record);
            async move {
                let id = ctx.metadata().get("micro-id").map(String::from);
                record.lock().unwrap().push((created, id));
                Ok::<(), Error>(())
            }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    while registry.get_service("micro.broker").await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let broker = Arc::new(RegistryBroker::new(
        Arc::clone(&registry),
        Arc::new(TcpTransport::default()),
    ));
    let publisher = Publisher::<Created>::new("created", broker);
    publisher
        .publish(Created {
            id: "c1".into(),
            weight: 5,
        })
        .await
        .unwrap();
    publisher
        .publish(micro_core::Request::new(
            Created {
                id: "c2".into(),
                weight: 7,
            },
            micro_core::CallOptions::new().json(),
        ))
        .await
        .unwrap();
    eventually("two events", || received.lock().unwrap().len() == 2).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got[0].0.id, "c1");
    assert_eq!((got[1].0.id.as_str(), got[1].0.weight), ("c2", 7));
    assert!(got[0].1.is_some(), "no Micro-Id header");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // The service's subscriptions left with it.
    assert!(registry.get_service("micro.broker").await.is_err());
}

/// A memory registry that fails as a remote one does. `down`: lookups hang for the
/// etcd client's 5 s, then fail (etcd unreachable). `lost`: nothing reaches it (the
/// process died: no renewal, no goodbye). `slow_deregister`: deregistrations take that
/// long. It records the TTL of every `micro.broker` registration, and counts lookups.
#[derive(Debug, Default)]
struct Faulty {
    inner: MemoryRegistry,
    down: AtomicBool,
    lost: AtomicBool,
    slow_deregister: std::sync::Mutex<Duration>,
    broker_ttls: std::sync::Mutex<Vec<Option<Duration>>>,
    lookups: AtomicUsize,
}

impl Faulty {
    fn ttls(&self) -> Vec<Option<Duration>> {
        self.broker_ttls.lock().unwrap().clone()
    }
}

#[micro_core::async_trait]
impl Registry for Faulty {
    async fn register(
        &self,
        service: &RegistryService,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        if service.name == BROKER_SERVICE {
            self.broker_ttls.lock().unwrap().push(options.ttl);
        }
        self.inner.register(service, options).await
    }

    async fn deregister(&self, service: &RegistryService) -> Result<(), RegistryError> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let slow = *self.slow_deregister.lock().unwrap();
        tokio::time::sleep(slow).await;
        self.inner.deregister(service).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<RegistryService>, RegistryError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Err(RegistryError::Backend {
                registry: "faulty",
                message: "unreachable".into(),
            });
        }
        self.inner.get_service(name).await
    }

    async fn list_services(&self) -> Result<Vec<RegistryService>, RegistryError> {
        self.inner.list_services().await
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        self.inner.watch(options).await
    }

    fn name(&self) -> &'static str {
        "faulty"
    }
}

/// Registers a `micro.broker` node for `topic` at `address`, as a subscriber process
/// would (`version`: `broadcast` or a queue group).
async fn register_subscription(
    registry: &Arc<dyn Registry>,
    id: &str,
    version: &str,
    topic: &str,
    address: &str,
) {
    let mut node = Node::new(id, address);
    node.metadata.insert("broker".into(), "registry".into());
    node.metadata.insert("topic".into(), topic.into());
    let record = RegistryService::new(BROKER_SERVICE)
        .version(version)
        .node(node);
    registry
        .register(&record, RegisterOptions::default())
        .await
        .unwrap();
}

/// A loopback address nothing listens on: connections to it are refused.
fn refusing_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A loopback address that accepts connections and never answers; open while the
/// returned task runs.
async fn silent_address() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

/// Captures the warnings and errors logged on this thread (tests run on a
/// current-thread runtime, so that is every task's).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn mentioning(&self, text: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(text))
            .collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn subscriptions_live_by_the_configured_ttl_and_expire_with_it() {
    let faulty = Arc::new(Faulty::default());
    let registry: Arc<dyn Registry> = faulty.clone();
    let broker = registry_broker(&registry)
        .ttl(Duration::from_secs(1))
        .interval(Duration::from_millis(250));
    broker.connect().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let sub = broker
        .subscribe("t", counter(count), SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(faulty.ttls(), [Some(Duration::from_secs(1))]);

    // Alive, it is renewed every interval and outlives its TTL.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(registry.get_service(BROKER_SERVICE).await.is_ok());
    let renewed = faulty.ttls();
    assert!(renewed.len() >= 7, "{} registrations", renewed.len());
    assert!(renewed.iter().all(|t| *t == Some(Duration::from_secs(1))));

    // The process dies: no more renewals, and no goodbye.
    faulty.lost.store(true, Ordering::SeqCst);
    let died = Instant::now();
    drop(sub);
    while registry.get_service(BROKER_SERVICE).await.is_ok() {
        assert!(died.elapsed() < Duration::from_secs(3), "never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = died.elapsed();
    eprintln!(
        "subscription node gone {took:?} after its process died (TTL 1 s, renewed every 250 ms)"
    );
    // The TTL from the last renewal (at most 250 ms before), plus a sweep (100 ms).
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took <= Duration::from_millis(1300), "{took:?}");
}

#[tokio::test]
async fn a_services_subscriptions_take_its_register_ttl_and_leave_with_it() {
    let faulty = Arc::new(Faulty::default());
    let registry: Arc<dyn Registry> = faulty.clone();
    let mut config = micro_core::Config::default();
    config.register_ttl = Duration::from_secs(5);
    config.register_interval = Duration::from_secs(1);
    let service = Service::from_config("listener", config)
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry))
        .subscribe("created", |_: Context, _: Created| async {
            Ok::<(), Error>(())
        })
        .subscribe("cancelled", |_: Context, _: Created| async {
            Ok::<(), Error>(())
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    eventually("both subscriptions", || faulty.ttls().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ttls = faulty.ttls();
    assert!(ttls.len() >= 4, "not renewed each interval: {ttls:?}");
    assert!(
        ttls.iter().all(|t| *t == Some(Duration::from_secs(5))),
        "{ttls:?}"
    );

    // Stopping takes them out of the registry before `run_until` returns, even when
    // deregistering is slow.
    *faulty.slow_deregister.lock().unwrap() = Duration::from_millis(200);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        registry
            .get_service(BROKER_SERVICE)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn ended_subscriptions_are_deregistered_before_disconnect_returns() {
    let faulty = Arc::new(Faulty::default());
    *faulty.slow_deregister.lock().unwrap() = Duration::from_millis(300);
    let registry: Arc<dyn Registry> = faulty.clone();
    let broker = registry_broker(&registry);
    broker.connect().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let dropped = broker
        .subscribe(
            "a",
            counter(Arc::clone(&count)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let _open = broker
        .subscribe("b", counter(count), SubscribeOptions::queue("q"))
        .await
        .unwrap();
    // One ended just before (its deregistration under way), one still open.
    drop(dropped);
    broker.disconnect().await.unwrap();
    assert!(
        registry
            .get_service(BROKER_SERVICE)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn deliveries_go_to_their_own_node_and_a_dead_node_is_reported() {
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(logs.clone());
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (live, publisher) = (registry_broker(&registry), registry_broker(&registry));
    live.connect().await.unwrap();
    publisher.connect().await.unwrap();
    let (fan, queue) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let _subs = [
        live.subscribe(
            "orders",
            counter(Arc::clone(&fan)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap(),
        live.subscribe(
            "orders",
            counter(Arc::clone(&queue)),
            SubscribeOptions::queue("billing"),
        )
        .await
        .unwrap(),
    ];
    // Subscribers of a process that died without deregistering: still registered,
    // refusing connections.
    let dead = refusing_address();
    register_subscription(
        &registry,
        "micro.broker-dead-1",
        "broadcast",
        "orders",
        &dead,
    )
    .await;
    register_subscription(&registry, "micro.broker-dead-2", "billing", "orders", &dead).await;

    for i in 0..5 {
        let result = publisher
            .publish(
                "orders",
                message(&i.to_string()),
                PublishOptions::default().timeout(Duration::from_secs(3)),
            )
            .await;
        // The broadcast to the dead node fails, every time, as what it is; the queue
        // group's message reaches its live member.
        match result {
            Err(BrokerError::Delivery {
                failed: 1,
                of: 3,
                first,
            }) => {
                assert!(first.contains("micro.broker-dead-1"), "{first}");
                assert!(first.contains(&dead), "{first}");
                assert!(first.contains("orders"), "{first}");
                assert!(first.contains("code 503"), "{first}");
                assert!(!first.contains("no subscription"), "{first}");
            }
            other => panic!("publish {i}: {other:?}"),
        }
    }
    // The live node got its own messages, each once: nothing meant for the dead one.
    eventually("deliveries", || {
        fan.load(Ordering::SeqCst) == 5 && queue.load(Ordering::SeqCst) == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fan.load(Ordering::SeqCst), 5);
    assert_eq!(queue.load(Ordering::SeqCst), 5);

    // Logged at warn once for the streak, naming node, address, topic and error.
    let warned = logs.mentioning("micro.broker-dead-1");
    assert_eq!(warned.len(), 1, "{:#?}", logs.lines());
    assert!(warned[0].starts_with("WARN"), "{}", warned[0]);
    assert!(warned[0].contains(&dead), "{}", warned[0]);
    assert!(warned[0].contains("topic=\"orders\""), "{}", warned[0]);
    assert!(warned[0].contains("code=503"), "{}", warned[0]);
    assert!(logs.mentioning("micro.broker-dead-2").len() <= 1);
    assert!(
        logs.mentioning("no subscription").is_empty(),
        "{:#?}",
        logs.lines()
    );
}

#[tokio::test]
async fn a_publish_waits_no_longer_than_its_deadline() {
    let faulty = Arc::new(Faulty::default());
    let registry: Arc<dyn Registry> = faulty.clone();

    // The registry is down and nothing is known yet: the lookup gets the deadline, not
    // the registry client's 5 s.
    faulty.down.store(true, Ordering::SeqCst);
    let cold = registry_broker(&registry);
    cold.connect().await.unwrap();
    let started = Instant::now();
    let result = cold
        .publish(
            "t",
            message("cold"),
            PublishOptions::default().timeout(Duration::from_millis(300)),
        )
        .await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(BrokerError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
    faulty.down.store(false, Ordering::SeqCst);

    // Subscribers known, then the registry goes down: publishing does not notice.
    let subscriber = registry_broker(&registry);
    subscriber.connect().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let _sub = subscriber
        .subscribe(
            "t",
            counter(Arc::clone(&count)),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let publisher = registry_broker(&registry);
    publisher.connect().await.unwrap();
    publisher
        .publish("t", message("warm"), PublishOptions::default())
        .await
        .unwrap();
    faulty.down.store(true, Ordering::SeqCst);
    let lookups = faulty.lookups.load(Ordering::SeqCst);
    let started = Instant::now();
    for i in 0..20 {
        publisher
            .publish(
                "t",
                message(&i.to_string()),
                PublishOptions::default().timeout(Duration::from_secs(2)),
            )
            .await
            .unwrap();
    }
    let each = started.elapsed() / 20;
    eprintln!("publish with the registry down: {each:?} each (20 publishes)");
    assert!(each < Duration::from_millis(100), "{each:?}");
    assert_eq!(
        faulty.lookups.load(Ordering::SeqCst),
        lookups,
        "asked the registry"
    );
    eventually("deliveries", || count.load(Ordering::SeqCst) == 21).await;
    faulty.down.store(false, Ordering::SeqCst);

    // A subscriber that never answers holds a publish up to its deadline, no longer.
    let (silent, _listening) = silent_address().await;
    register_subscription(&registry, "micro.broker-silent", "broadcast", "t", &silent).await;
    eventually("the silent subscriber known", || {
        futures::executor::block_on(registry.get_service(BROKER_SERVICE))
            .is_ok_and(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>() == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let result = publisher
        .publish(
            "t",
            message("late"),
            PublishOptions::default().timeout(Duration::from_millis(300)),
        )
        .await;
    let took = started.elapsed();
    match result {
        Err(BrokerError::DeadlineExceeded { message, .. }) => {
            assert!(message.contains("1 of 2"), "{message}");
            assert!(message.contains("micro.broker-silent"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_millis(600), "{took:?}");
    // The live subscriber got it all the same.
    eventually("the live delivery", || count.load(Ordering::SeqCst) == 22).await;
}

#[tokio::test]
async fn a_handlers_publish_gets_what_is_left_of_its_callers_deadline() {
    let registry = support::registry();
    // The broker's registry is down and knows nobody: looking up subscribers hangs.
    let faulty = Arc::new(Faulty::default());
    faulty.down.store(true, Ordering::SeqCst);
    let broker: Arc<dyn Broker> = Arc::new(registry_broker(&(faulty as Arc<dyn Registry>)));
    let publisher = Publisher::<Created>::new("created", broker);
    let (seen, mut saw) = tokio::sync::mpsc::unbounded_channel();
    let service = support::start("booker", &registry, move |s| {
        s.handle(support::handler("Book", move |ctx: Context, _| {
            let (publisher, seen) = (publisher.clone(), seen.clone());
            // On a task of its own, which the server does not drop at the deadline.
            let publishing = tokio::spawn(async move {
                let started = Instant::now();
                let published = publisher
                    .publish(micro_core::Request::new(
                        Created {
                            id: "c1".into(),
                            weight: 1,
                        },
                        ctx.call_options(),
                    ))
                    .await;
                let _ = seen.send((published.clone(), started.elapsed()));
                published
            });
            async move { publishing.await.unwrap().map(|()| support::msg("booked")) }
        }))
        .unwrap()
    })
    .await;
    let started = Instant::now();
    let reply: Result<support::Msg, Error> = support::client(&registry)
        .call(
            "booker",
            "/test.Book/Call",
            micro_core::Request::new(
                support::msg(""),
                micro_core::CallOptions::new().timeout(Duration::from_millis(400)),
            ),
        )
        .await;
    let caller_waited = started.elapsed();
    assert_eq!(reply.unwrap_err().code, 408);
    let (published, took) = tokio::time::timeout(Duration::from_secs(2), saw.recv())
        .await
        .expect("the handler finished")
        .unwrap();
    eprintln!("caller gave up after {caller_waited:?}; the handler's publish after {took:?}");
    assert_eq!(published.unwrap_err().code, 408);
    assert!(took < Duration::from_millis(450), "{took:?}");
    service.stop().await.unwrap();
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use micro_core::broker::NatsBroker;

    /// A nats-server on a free loopback port, stopped on drop.
    struct NatsServer {
        child: std::process::Child,
        url: String,
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// NATS processes each connection's commands in order, but not across connections:
    /// a message published on one connection right after another connection
    /// subscribed can reach the server first. Give subscriptions a moment.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    fn nats_server() -> Option<NatsServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("MICRO_REQUIRE_NATS").is_err(),
                    "nats-server is required (apt-get install nats-server): {e}"
                );
                eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    // Both checks in one test, each with a nats-server of its own.
    #[tokio::test]
    async fn nats_broker() {
        fans_out_and_delivers_once_per_queue_group().await;
        uses_go_micros_json_layout_both_ways().await;
    }

    async fn fans_out_and_delivers_once_per_queue_group() {
        let Some(server) = nats_server() else { return };
        let (a, b, publisher) = (
            NatsBroker::new(&server.url),
            NatsBroker::new(&server.url),
            NatsBroker::new(&server.url),
        );
        for broker in [&a, &b, &publisher] {
            broker.connect().await.unwrap();
        }
        let (fan_a, fan_b, queue_a, queue_b) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let _subs = [
            a.subscribe(
                "orders",
                counter(Arc::clone(&fan_a)),
                SubscribeOptions::default(),
            )
            .await
            .unwrap(),
            b.subscribe(
                "orders",
                counter(Arc::clone(&fan_b)),
                SubscribeOptions::default(),
            )
            .await
            .unwrap(),
            a.subscribe(
                "orders",
                counter(Arc::clone(&queue_a)),
                SubscribeOptions::queue("billing"),
            )
            .await
            .unwrap(),
            b.subscribe(
                "orders",
                counter(Arc::clone(&queue_b)),
                SubscribeOptions::queue("billing"),
            )
            .await
            .unwrap(),
        ];
        settle().await;
        for i in 0..50 {
            publisher
                .publish(
                    "orders",
                    message(&format!("order {i}")),
                    PublishOptions::default(),
                )
                .await
                .unwrap();
        }

        eventually("fan-out", || {
            fan_a.load(Ordering::SeqCst) == 50 && fan_b.load(Ordering::SeqCst) == 50
        })
        .await;
        eventually("queue", || {
            queue_a.load(Ordering::SeqCst) + queue_b.load(Ordering::SeqCst) == 50
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            queue_a.load(Ordering::SeqCst) + queue_b.load(Ordering::SeqCst),
            50
        );
        publisher.disconnect().await.unwrap();
    }

    async fn uses_go_micros_json_layout_both_ways() {
        let Some(server) = nats_server() else { return };
        // A raw NATS client stands in for a go-micro service.
        let raw = async_nats::connect(&server.url).await.unwrap();
        let mut seen = raw.subscribe("events").await.unwrap();
        raw.flush().await.unwrap();
        let broker = NatsBroker::new(&server.url);
        broker.connect().await.unwrap();
        let mut sent = message("{\"id\":\"1\"}");
        sent.header.insert("Micro-Topic".into(), "events".into());
        broker
            .publish("events", sent.clone(), PublishOptions::default())
            .await
            .unwrap();
        use futures::StreamExt;
        let got = tokio::time::timeout(Duration::from_secs(5), seen.next())
            .await
            .unwrap()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(json["Header"]["Micro-Topic"], "events");
        assert_eq!(json["Body"], "eyJpZCI6IjEifQ==");

        // What a go-micro publisher sends arrives decoded; garbage is skipped and counted.
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let _sub = broker
            .subscribe(
                "from-go",
                handler(move |event: Event| {
                    let record = Arc::clone(&record);
                    async move {
                        record.lock().unwrap().push(event.message);
                        Ok(())
                    }
                }),
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
        settle().await;
        raw.publish("from-go", "not json".into()).await.unwrap();
        raw.publish(
            "from-go",
            r#"{"Header":{"Content-Type":"application/json"},"Body":"aGk="}"#.into(),
        )
        .await
        .unwrap();
        raw.flush().await.unwrap();
        eventually("the go-micro message", || {
            received.lock().unwrap().len() == 1
        })
        .await;
        assert_eq!(received.lock().unwrap()[0].body, b"hi");
        assert_eq!(broker.malformed(), 1);
        broker.disconnect().await.unwrap();
    }
}
