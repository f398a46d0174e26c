//! Brokers over real sockets: the registry broker (no server), and NATS against a
//! real nats-server (feature `nats`).

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use micro_core::broker::{
    Broker, BrokerError, Event, Message, RegistryBroker, SubscribeOptions, handler,
};
use micro_core::event::Publisher;
use micro_core::registry::{MemoryRegistry, Registry};
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
            .publish("orders", message(&format!("order {i}")))
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
    publisher.publish("nobody", message("x")).await.unwrap();
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
        match publisher.publish("ticks", message(&i.to_string())).await {
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
    publisher.publish("t", message("1")).await.unwrap();
    eventually("first delivery", || count.load(Ordering::SeqCst) == 1).await;
    sub.unsubscribe();
    eventually("deregistration", || {
        futures::executor::block_on(registry.get_service("micro.broker")).is_err()
    })
    .await;
    publisher.publish("t", message("2")).await.unwrap();
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
    publisher.publish("t", message("3")).await.unwrap();
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
                .publish("orders", message(&format!("order {i}")))
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
        broker.publish("events", sent.clone()).await.unwrap();
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
