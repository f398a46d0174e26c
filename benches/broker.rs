//! Brokers side by side in one run (issue 18, point 3): raw async-nats publish and
//! subscribe as the ceiling, micro's NATS broker on the same nats-server, and micro's
//! registry broker (no server: subscriptions found in a memory registry, deliveries
//! over gRPC on loopback). One publisher, 1 KiB payloads, to 1 subscriber, to 10, and
//! to a queue group of 3. Run with `make bench-scale` (see BENCHMARKS.md).
//!
//! Each point has two phases on fresh subscriptions and a topic of its own:
//!
//! - throughput: the publisher publishes as fast as `publish` returns, for
//!   [`BURST`] or [`BURST_MAX`] messages, whichever comes first; events/s = events
//!   delivered (every subscriber's, so 10 subscribers count each message 10 times)
//!   over the time from the first publish to the last delivery;
//! - latency: the publisher publishes at [`PACED_RATE`] for [`PACED`], so that the
//!   latency is the broker's and not a queue's; each payload carries its publish
//!   time, and each subscriber records publish → handler.
//!
//! Lost = events expected (published × subscribers, or published for a queue group)
//! minus events delivered once deliveries stop.
//!
//! The publisher and the subscribers share this process (each with its own
//! connection, or its own registry broker and endpoint, as separate processes would
//! have) and its runtime of 2 worker threads; nats-server is a child process. So
//! subscribers, publisher and server share the machine's cores: the figures are for
//! one machine, not a network.

// A benchmark reports by printing, and fails by panicking on its own setup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro_core::broker::{
    Broker, Message, NatsBroker, PublishOptions, RegistryBroker, SubscribeOptions, Subscriber,
    handler,
};
use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::transport::TcpTransport;

/// Bytes per payload.
const PAYLOAD: usize = 1024;
/// The throughput phase publishes for this long at most...
const BURST: Duration = Duration::from_secs(2);
/// ... and this many messages at most.
const BURST_MAX: u64 = 100_000;
/// The latency phase's rate (messages per second) and length.
const PACED_RATE: u64 = 1000;
const PACED: Duration = Duration::from_secs(2);
/// Warm-up messages (connections made, subscribers looked up), not counted.
const WARMUP: u64 = 100;
/// Deliveries are over when none has come for this long.
const QUIET: Duration = Duration::from_secs(1);
/// Paired rounds per point; `BENCH_ROUNDS` changes it.
const ROUNDS: usize = 3;

const WARM: u8 = 0;
const THROUGHPUT: u8 = 1;
const LATENCY: u8 = 2;

/// Nanoseconds since the bench started: the clock payloads carry.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A payload of [`PAYLOAD`] bytes: publish time, then phase, then zeros.
fn payload(phase: u8) -> Vec<u8> {
    let mut body = vec![0; PAYLOAD];
    body[..8].copy_from_slice(&now_ns().to_le_bytes());
    body[8] = phase;
    body
}

/// What the subscribers of one point received.
#[derive(Default)]
struct Recorder {
    received: [AtomicU64; 3],
    last_ns: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    malformed: AtomicU64,
}

impl Recorder {
    fn record(&self, body: &[u8]) {
        let now = now_ns();
        let (Some(sent), Some(&phase)) = (body.get(..8), body.get(8)) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(count) = self.received.get(usize::from(phase)) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if phase == LATENCY {
            let mut sent_ns = [0; 8];
            sent_ns.copy_from_slice(sent);
            let latency = now.saturating_sub(u64::from_le_bytes(sent_ns));
            self.latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(latency);
        }
    }

    fn received(&self, phase: u8) -> u64 {
        self.received[usize::from(phase)].load(Ordering::Relaxed)
    }

    /// Waits until `expected` events of `phase` came, or none came for [`QUIET`].
    async fn drained(&self, phase: u8, expected: u64) {
        let mut seen = self.received(phase);
        let mut since = Instant::now();
        while seen < expected && since.elapsed() < QUIET {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = self.received(phase);
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Raw,
    Nats,
    Registry,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw async-nats",
            Self::Nats => "micro NATS broker",
            Self::Registry => "micro registry broker",
        }
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Fanout(usize),
    Queue(usize),
}

impl Shape {
    fn label(self) -> String {
        match self {
            Self::Fanout(1) => "1 subscriber".into(),
            Self::Fanout(n) => format!("{n} subscribers"),
            Self::Queue(n) => format!("queue group of {n}"),
        }
    }

    fn subscribers(self) -> usize {
        match self {
            Self::Fanout(n) | Self::Queue(n) => n,
        }
    }

    /// Events delivered per message published.
    fn fanout(self) -> u64 {
        match self {
            Self::Fanout(n) => n as u64,
            Self::Queue(_) => 1,
        }
    }

    fn queue(self) -> Option<&'static str> {
        matches!(self, Self::Queue(_)).then_some("bench")
    }
}

enum Publisher {
    Raw(async_nats::Client),
    Micro(Arc<dyn Broker>),
}

impl Publisher {
    async fn publish(&self, topic: &str, body: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Raw(client) => client
                .publish(topic.to_string(), body.into())
                .await
                .map_err(|e| e.to_string()),
            Self::Micro(broker) => broker
                .publish(
                    topic,
                    Message {
                        body,
                        ..Message::default()
                    },
                    PublishOptions::default(),
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// One point's publisher and what keeps its subscriptions alive.
struct Setup {
    publisher: Publisher,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    subscriptions: Vec<Subscriber>,
    brokers: Vec<Arc<dyn Broker>>,
}

impl Setup {
    async fn teardown(self) {
        for task in &self.tasks {
            task.abort();
        }
        drop(self.subscriptions);
        for broker in &self.brokers {
            if let Err(e) = broker.disconnect().await {
                eprintln!("disconnect: {e}");
            }
        }
    }
}

async fn setup(
    system: System,
    shape: Shape,
    topic: &str,
    nats_url: &str,
    recorder: &Arc<Recorder>,
) -> Setup {
    let mut tasks = Vec::new();
    let mut subscriptions = Vec::new();
    let mut brokers: Vec<Arc<dyn Broker>> = Vec::new();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let micro = |system: System| -> Arc<dyn Broker> {
        match system {
            System::Nats => Arc::new(NatsBroker::new(nats_url)),
            _ => Arc::new(RegistryBroker::listening(
                Arc::clone(&registry),
                Arc::new(TcpTransport::default()),
                "127.0.0.1:0",
            )),
        }
    };
    for _ in 0..shape.subscribers() {
        if system == System::Raw {
            let client = async_nats::connect(nats_url)
                .await
                .expect("connect to nats-server");
            let mut subscription = match shape.queue() {
                Some(queue) => {
                    client
                        .queue_subscribe(topic.to_string(), queue.into())
                        .await
                }
                None => client.subscribe(topic.to_string()).await,
            }
            .expect("subscribe");
            client.flush().await.expect("flush");
            let recorder = Arc::clone(recorder);
            tasks.push(tokio::spawn(async move {
                // The client lives as long as its subscription.
                let _client = client;
                while let Some(message) = subscription.next().await {
                    recorder.record(&message.payload);
                }
            }));
        } else {
            let broker = micro(system);
            broker.connect().await.expect("connect the broker");
            let recorder = Arc::clone(recorder);
            let options = match shape.queue() {
                Some(queue) => SubscribeOptions::queue(queue),
                None => SubscribeOptions::default(),
            };
            let on_event = handler(move |event: micro_core::broker::Event| {
                recorder.record(&event.message.body);
                async { Ok(()) }
            });
            subscriptions.push(
                broker
                    .subscribe(topic, on_event, options)
                    .await
                    .expect("subscribe"),
            );
            brokers.push(broker);
        }
    }
    let publisher = if system == System::Raw {
        Publisher::Raw(
            async_nats::connect(nats_url)
                .await
                .expect("connect to nats-server"),
        )
    } else {
        let broker = micro(system);
        broker.connect().await.expect("connect the broker");
        brokers.push(Arc::clone(&broker));
        Publisher::Micro(broker)
    };
    Setup {
        publisher,
        tasks,
        subscriptions,
        brokers,
    }
}

/// One system at one point: throughput and latency.
struct Run {
    published_per_s: f64,
    events_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    lost: u64,
    errors: u64,
}

async fn run(system: System, shape: Shape, topic: &str, nats_url: &str) -> Run {
    let recorder = Arc::new(Recorder::default());
    let setup = setup(system, shape, topic, nats_url, &recorder).await;
    // NATS applies a subscription in order with its own connection's commands only,
    // and the registry broker finds subscribers through its watch: let both settle,
    // then warm up until every warm-up message is in (or deliveries stop).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut errors = 0;
    for _ in 0..WARMUP {
        if setup.publisher.publish(topic, payload(WARM)).await.is_err() {
            errors += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    recorder
        .drained(WARM, (WARMUP - errors) * shape.fanout())
        .await;

    // Throughput.
    let mut errors = 0;
    let mut sent = 0;
    let started = now_ns();
    let start = Instant::now();
    while sent + errors < BURST_MAX && start.elapsed() < BURST {
        match setup.publisher.publish(topic, payload(THROUGHPUT)).await {
            Ok(()) => sent += 1,
            Err(e) => {
                if errors == 0 {
                    eprintln!("{}: publish failed: {e}", system.label());
                }
                errors += 1;
            }
        }
    }
    let publishing = start.elapsed().as_secs_f64();
    let expected = sent * shape.fanout();
    recorder.drained(THROUGHPUT, expected).await;
    let delivered = recorder.received(THROUGHPUT);
    let elapsed = recorder
        .last_ns
        .load(Ordering::Relaxed)
        .saturating_sub(started) as f64
        / 1e9;
    let mut lost = expected.saturating_sub(delivered);

    // Latency, paced.
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / PACED_RATE));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut paced = 0;
    let start = Instant::now();
    while start.elapsed() < PACED {
        ticks.tick().await;
        match setup.publisher.publish(topic, payload(LATENCY)).await {
            Ok(()) => paced += 1,
            Err(_) => errors += 1,
        }
    }
    let expected = paced * shape.fanout();
    recorder.drained(LATENCY, expected).await;
    lost += expected.saturating_sub(recorder.received(LATENCY));
    let mut latencies =
        std::mem::take(&mut *recorder.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let malformed = recorder.malformed.load(Ordering::Relaxed);
    if malformed > 0 {
        eprintln!("{}: {malformed} malformed payloads", system.label());
    }
    setup.teardown().await;
    Run {
        published_per_s: sent as f64 / publishing,
        events_per_s: if elapsed > 0.0 {
            delivered as f64 / elapsed
        } else {
            0.0
        },
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        lost,
        errors,
    }
}

/// The `p` quantile of sorted nanoseconds, in microseconds (NaN when empty).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A nats-server on a free loopback port, stopped on drop.
struct NatsServer {
    child: Child,
    url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server() -> NatsServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is required (make deps)");
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn wanted(system: System) -> bool {
    let key = match system {
        System::Raw => "raw",
        System::Nats => "nats",
        System::Registry => "registry",
    };
    std::env::var("BENCH_SYSTEMS").map_or(true, |list| list.split(',').any(|s| s.trim() == key))
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Quiet: a failed delivery is counted here, not logged per message.
    let _ = micro_core::tracing_subscriber::fmt()
        .with_env_filter(
            micro_core::tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .try_init();
    now_ns();
    let server = nats_server();
    let rounds = rounds();
    // `BENCH_SYSTEMS=raw,nats` runs only those (to profile one); raw stays first,
    // the ratios' reference.
    let systems: Vec<System> = [System::Raw, System::Nats, System::Registry]
        .into_iter()
        .filter(|system| wanted(*system))
        .collect();
    println!(
        "Brokers, 1 KiB payloads, one publisher, {rounds} rounds per point: throughput \
         (publishing flat out for {BURST:?} or {BURST_MAX} messages), latency paced at \
         {PACED_RATE}/s for {PACED:?}. Medians over rounds; ratios are each round's micro \
         against the raw round before it."
    );
    println!();
    println!(
        "| subscribers | system | published msg/s | delivered events/s | ratio to raw | p50 µs | p99 µs | p99 ratio | lost | publish errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for shape in [Shape::Fanout(1), Shape::Fanout(10), Shape::Queue(3)] {
        let mut runs: Vec<Vec<Run>> = systems.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, &system) in systems.iter().enumerate() {
                let topic = format!("bench.{}.{round}.{i}", shape.subscribers());
                runs[i].push(run(system, shape, &topic, &server.url).await);
            }
        }
        for (i, system) in systems.iter().enumerate() {
            let ratio = |f: fn(&Run) -> f64| {
                median(
                    runs[i]
                        .iter()
                        .zip(&runs[0])
                        .map(|(micro, raw)| f(micro) / f(raw))
                        .collect(),
                )
            };
            let (ratio, p99_ratio) = if i == 0 {
                ("1".to_string(), "1".to_string())
            } else {
                (
                    format!("{:.2}", ratio(|r| r.events_per_s)),
                    format!("{:.2}", ratio(|r| r.p99_us)),
                )
            };
            let of = |f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
            println!(
                "| {} | {} | {:.0} | {:.0} | {ratio} | {:.0} | {:.0} | {p99_ratio} | {} | {} |",
                shape.label(),
                system.label(),
                of(|r| r.published_per_s),
                of(|r| r.events_per_s),
                of(|r| r.p50_us),
                of(|r| r.p99_us),
                runs[i].iter().map(|r| r.lost).sum::<u64>(),
                runs[i].iter().map(|r| r.errors).sum::<u64>(),
            );
        }
    }
    publish_only(&server.url).await;
    drop(server);
    envelope();
}

/// The publisher's side alone: publishes with nobody subscribed (the server drops
/// them), raw against micro's NATS broker, to tell its cost from the subscribers'.
async fn publish_only(nats_url: &str) {
    const TIMES: u32 = 100_000;
    let raw = Publisher::Raw(
        async_nats::connect(nats_url)
            .await
            .expect("connect to nats-server"),
    );
    let broker: Arc<dyn Broker> = Arc::new(NatsBroker::new(nats_url));
    broker.connect().await.expect("connect the broker");
    let micro = Publisher::Micro(Arc::clone(&broker));
    println!();
    for (label, publisher) in [("raw async-nats", &raw), ("micro NATS broker", &micro)] {
        let start = Instant::now();
        for _ in 0..TIMES {
            if let Err(e) = publisher.publish("bench.nobody", payload(THROUGHPUT)).await {
                eprintln!("{label}: publish failed: {e}");
                break;
            }
        }
        let each = start.elapsed() / TIMES;
        println!("Publishing with no subscriber, {label}: {each:?} per 1 KiB message.");
    }
    if let Err(e) = broker.disconnect().await {
        eprintln!("disconnect: {e}");
    }
}

/// What go-micro's NATS envelope (JSON with a base64 body) costs per 1 KiB message,
/// the work micro's NATS broker does that raw async-nats does not.
fn envelope() {
    const TIMES: u32 = 100_000;
    let message = Message {
        body: payload(THROUGHPUT),
        ..Message::default()
    };
    let start = Instant::now();
    for _ in 0..TIMES {
        std::hint::black_box(micro_core::broker::nats::encode(std::hint::black_box(
            &message,
        )));
    }
    let encode = start.elapsed() / TIMES;
    let encoded = micro_core::broker::nats::encode(&message);
    let start = Instant::now();
    for _ in 0..TIMES {
        let decoded = micro_core::broker::nats::decode(std::hint::black_box(&encoded));
        std::hint::black_box(decoded.map(|m| m.body.len()).unwrap_or_default());
    }
    let decode = start.elapsed() / TIMES;
    println!();
    println!(
        "go-micro's NATS envelope, one thread: {} B on the wire for {PAYLOAD} B of body; \
         encode {encode:?}, decode {decode:?} per message.",
        encoded.len()
    );
}
