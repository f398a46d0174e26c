//! micro against raw tonic, side by side in one run: unary echo over loopback at
//! several concurrencies and payload sizes, alternating the two; then the footprint
//! of the consignment example. Run with `make bench` (see BENCHMARKS.md).
//!
//! Both servers and their clients share this process and its runtime (2 worker
//! threads), so both are measured under the same conditions.

// A benchmark reports by printing, and fails by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod micro_echo {
    #![allow(missing_docs, unreachable_pub, dead_code)]
    micro_core::include_proto!("micro.bench");
}

mod tonic_echo {
    #![allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tonic/micro.bench.rs"));
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::transport::TcpTransport;
use micro_core::{Client, Context, Error, Service};

/// Paired rounds per point; `BENCH_ROUNDS` raises it on a noisy machine.
const ROUNDS: usize = 15;
const RUN: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_millis(500);

struct MicroEcho;

#[micro_core::async_trait]
impl micro_echo::EchoHandler for MicroEcho {
    async fn say(
        &self,
        _ctx: Context,
        request: micro_echo::Payload,
    ) -> Result<micro_echo::Payload, Error> {
        Ok(request)
    }
}

struct TonicEcho;

#[tonic::async_trait]
impl tonic_echo::echo_server::Echo for TonicEcho {
    async fn say(
        &self,
        request: tonic::Request<tonic_echo::Payload>,
    ) -> Result<tonic::Response<tonic_echo::Payload>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Latencies and count of one run.
struct Sample {
    rps: f64,
    latencies: Vec<Duration>,
}

async fn drive<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    call().await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    Sample {
        rps: latencies.len() as f64 / elapsed,
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One round's rate and latency percentiles.
struct Round {
    rps: f64,
    p50: f64,
    p99: f64,
}

fn round(mut sample: Sample) -> Round {
    sample.latencies.sort();
    Round {
        rps: sample.rps,
        p50: percentile(&sample.latencies, 0.50).as_secs_f64(),
        p99: percentile(&sample.latencies, 0.99).as_secs_f64(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Medians over rounds. The ratios are the medians of each tonic round and the
/// micro round right after it: whatever else the machine is doing at a moment
/// weighs on both of a pair, and a disturbed pair moves the median little.
struct Comparison {
    tonic_rps: f64,
    micro_rps: f64,
    rps_ratio: f64,
    tonic_p50: f64,
    micro_p50: f64,
    tonic_p99: f64,
    micro_p99: f64,
    p99_ratio: f64,
}

fn compare(tonic: &[Round], micro: &[Round]) -> Comparison {
    let each = |f: fn(&Round) -> f64, rounds: &[Round]| median(rounds.iter().map(f).collect());
    let pairs =
        |f: fn(&Round) -> f64| median(tonic.iter().zip(micro).map(|(t, m)| f(m) / f(t)).collect());
    Comparison {
        tonic_rps: each(|r| r.rps, tonic),
        micro_rps: each(|r| r.rps, micro),
        rps_ratio: pairs(|r| r.rps),
        tonic_p50: each(|r| r.p50, tonic),
        micro_p50: each(|r| r.p50, micro),
        tonic_p99: each(|r| r.p99, tonic),
        micro_p99: each(|r| r.p99, micro),
        p99_ratio: pairs(|r| r.p99),
    }
}

fn us(seconds: f64) -> f64 {
    seconds * 1e6
}

/// Raw tonic: tonic's generated server on a free loopback port, and a client on one
/// channel to it.
async fn start_tonic() -> tonic_echo::echo_client::EchoClient<tonic::transport::Channel> {
    let port = free_port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(tonic_echo::echo_server::EchoServer::new(TonicEcho))
            .serve(address),
    );
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    tonic_echo::echo_client::EchoClient::new(channel)
}

/// micro's echo service, found by name through a memory registry, with `setup`
/// applied to the service (e.g. an OTLP endpoint); returns its client and a handle
/// that stops it.
async fn start_micro(
    setup: impl FnOnce(Service) -> Service,
) -> (
    micro_echo::EchoService,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micro_core::ServiceError>>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let service = Service::new("micro.bench")
        .unwrap()
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry));
    let service = setup(service.handle(micro_echo::echo_handler(MicroEcho)).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    while registry.get_service("micro.bench").await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = micro_echo::EchoService::new(
        "micro.bench",
        Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default())),
    );
    (client, stop, task)
}

/// Rounds per point: `BENCH_ROUNDS`, else [`ROUNDS`].
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
}

/// Whether to run points at `concurrency`: `BENCH_CONCURRENCY` (a comma-separated
/// list, e.g. `1` to study the latency-bound point alone), else every point.
fn wanted(concurrency: usize) -> bool {
    match std::env::var("BENCH_CONCURRENCY") {
        Ok(list) => list.split(',').any(|c| c.trim().parse() == Ok(concurrency)),
        Err(_) => true,
    }
}

/// One point, tonic and micro in turn: the comparison, and how many calls micro made
/// (warm-up included).
async fn point(
    tonic: &tonic_echo::echo_client::EchoClient<tonic::transport::Channel>,
    micro: &micro_echo::EchoService,
    size: usize,
    concurrency: usize,
) -> (Comparison, usize) {
    let data = vec![7u8; size];
    let call_tonic = {
        let (client, data) = (tonic.clone(), data.clone());
        move || {
            let mut client = client.clone();
            let data = data.clone();
            async move {
                client.say(tonic_echo::Payload { data }).await.unwrap();
            }
        }
    };
    let call_micro = {
        let (client, data) = (micro.clone(), data.clone());
        move || {
            let client = client.clone();
            let data = data.clone();
            async move {
                client.say(micro_echo::Payload { data }).await.unwrap();
            }
        }
    };
    drive(concurrency, WARMUP, call_tonic.clone()).await;
    let mut micro_calls = drive(concurrency, WARMUP, call_micro.clone())
        .await
        .latencies
        .len();
    let (mut t, mut m) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        t.push(round(drive(concurrency, RUN, call_tonic.clone()).await));
        let sample = drive(concurrency, RUN, call_micro.clone()).await;
        micro_calls += sample.latencies.len();
        m.push(round(sample));
    }
    (compare(&t, &m), micro_calls)
}

async fn rpc() {
    let (micro, stop, micro_task) = start_micro(|s| s).await;
    let tonic = start_tonic().await;

    println!(
        "| payload | concurrency | tonic req/s | micro req/s | ratio | tonic p50 µs | micro p50 µs | tonic p99 µs | micro p99 µs | p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in [64usize, 4096] {
        for concurrency in [1usize, 16, 64].into_iter().filter(|&c| wanted(c)) {
            let (c, _) = point(&tonic, &micro, size, concurrency).await;
            println!(
                "| {size} B | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                c.tonic_rps,
                c.micro_rps,
                c.rps_ratio,
                us(c.tonic_p50),
                us(c.micro_p50),
                us(c.tonic_p99),
                us(c.micro_p99),
                c.p99_ratio,
            );
        }
    }
    let _ = stop.send(());
    let _ = micro_task.await;
}

/// What observability this build and run has on, as the table's first column says it.
fn observability_label(otlp: bool) -> String {
    let mut on = vec!["spans"];
    if cfg!(feature = "otel") {
        on.push("otel");
    }
    if cfg!(feature = "metrics") {
        on.push("metrics");
    }
    if otlp {
        on.push("OTLP export");
    }
    on.join(" + ")
}

/// `--observability [--otlp]`: the cost of what this build observes (its features
/// `otel` and `metrics`; `make bench` builds it three ways), against raw tonic in the
/// same process, which runs under the same subscriber. The service installs its
/// default subscriber (the log at `info`, where micro's spans are); with `--otlp` it
/// exports every span (the SDK's default sampler, parent-based always-on: 100 %) to a
/// sink in a child process, which counts what it receives.
async fn observability(otlp: bool, header: bool) {
    if header {
        println!(
            "| on | payload | concurrency | tonic req/s | micro req/s | ratio | tonic p99 µs | micro p99 µs | p99 ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    let sink = if otlp { Some(OtlpSink::start()) } else { None };
    let endpoint = sink.as_ref().map(|s| format!("http://{}", s.address));
    let (micro, stop, micro_task) = start_micro(move |service| match endpoint {
        #[cfg(feature = "otel")]
        Some(url) => service.otlp_endpoint(url),
        #[cfg(not(feature = "otel"))]
        Some(_) => panic!("--otlp needs the feature otel"),
        None => service,
    })
    .await;
    let tonic = start_tonic().await;
    let label = observability_label(otlp);
    let mut calls = 0;
    let started = Instant::now();
    for (size, concurrency) in [(64usize, 1usize), (64, 16), (64, 64)]
        .into_iter()
        .filter(|&(_, c)| wanted(c))
    {
        let (c, n) = point(&tonic, &micro, size, concurrency).await;
        calls += n;
        println!(
            "| {label} | {size} B | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            c.tonic_rps,
            c.micro_rps,
            c.rps_ratio,
            us(c.tonic_p99),
            us(c.micro_p99),
            c.p99_ratio,
        );
    }
    // Stopping the service flushes its exporter (within its grace period).
    let _ = stop.send(());
    let _ = micro_task.await;
    if let Some(sink) = sink {
        let elapsed = started.elapsed().as_secs_f64();
        let received = sink.finish();
        // Each micro call makes three spans: the client's call, its attempt, the server's.
        let made = 3 * calls;
        println!(
            "| {label}: spans made / exported to the sink | {made} ({:.0}/s) / {received} ({:.0}/s), {:.1} % | | | | | | | |",
            made as f64 / elapsed,
            received as f64 / elapsed,
            100.0 * received as f64 / made.max(1) as f64,
        );
    }
}

/// An OTLP/gRPC trace sink in a child process (this binary with `--otlp-sink`): it
/// decodes and counts the spans it receives, so that receiving them costs what a
/// collector elsewhere would not cost micro's process, yet shares this machine's CPU.
struct OtlpSink {
    address: String,
    child: std::process::Child,
}

impl OtlpSink {
    fn start() -> Self {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--otlp-sink", &address])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(&address).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Self { address, child }
    }

    /// Closes the sink's stdin, which ends it; returns the spans it received.
    fn finish(mut self) -> u64 {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

/// The sink's side: serves OTLP/gRPC traces on `address` until stdin closes, then
/// prints how many spans came.
async fn otlp_sink(address: &str) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Clone, Default)]
    struct Count(Arc<AtomicU64>);

    #[tonic::async_trait]
    impl TraceService for Count {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let spans: usize = request
                .into_inner()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.0.fetch_add(spans as u64, Ordering::Relaxed);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    let count = Count::default();
    let address: std::net::SocketAddr = address.parse().unwrap();
    let stdin_closed = async {
        // Blocking read on a thread of its own: returns at end of file.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    };
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(count.clone()))
        .serve_with_shutdown(address, stdin_closed)
        .await
        .unwrap();
    println!("{}", count.0.load(Ordering::Relaxed));
}

/// How many calls the profile modes keep in flight: `PROFILE_CONCURRENCY`, default 16.
fn profile_concurrency() -> usize {
    std::env::var("PROFILE_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16)
}

/// The payload of the profile modes: `PROFILE_SIZE` bytes, default 64.
fn profile_size() -> usize {
    std::env::var("PROFILE_SIZE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

/// How long the profile modes run: `PROFILE_SECONDS`, default 8.
fn profile_duration() -> Duration {
    std::env::var("PROFILE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(8), Duration::from_secs_f64)
}

/// Only micro, `PROFILE_CONCURRENCY` calls of `PROFILE_SIZE` bytes in flight for
/// `PROFILE_SECONDS` (8 s): for `perf record`.
async fn profile_micro() {
    let (micro, _stop, _task) = start_micro(|s| s).await;
    let sample = drive(profile_concurrency(), profile_duration(), move || {
        let client = micro.clone();
        async move {
            client
                .say(micro_echo::Payload {
                    data: vec![7; profile_size()],
                })
                .await
                .unwrap();
        }
    })
    .await;
    println!("{:.0} req/s, {} calls", sample.rps, sample.latencies.len());
}

/// Only raw tonic, as [`profile_micro`] runs micro: the baseline for a profile.
async fn profile_tonic() {
    let tonic = start_tonic().await;
    let sample = drive(profile_concurrency(), profile_duration(), move || {
        let mut client = tonic.clone();
        async move {
            client
                .say(tonic_echo::Payload {
                    data: vec![7; profile_size()],
                })
                .await
                .unwrap();
        }
    })
    .await;
    println!("{:.0} req/s, {} calls", sample.rps, sample.latencies.len());
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn footprint() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples");
    let start = |name: &str| {
        std::process::Command::new(examples.join(name))
            .env("MICRO_MDNS_INTERFACES", "loopback")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{name}: {e} (make bench builds the release examples first)")
            })
    };
    let mut vessel = start("vessel");
    let mut consignment = start("consignment");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = memory(consignment.id());

    let registry = Arc::new(
        micro_core::registry::MdnsRegistry::builder()
            .loopback_only()
            .build()
            .unwrap(),
    );
    let client = Client::new(registry, Arc::new(TcpTransport::default()));
    let shipping =
        micro_examples::consignment::ShippingService::new("go.micro.srv.consignment", client);
    let booking = micro_examples::consignment::Consignment {
        description: "bench".into(),
        weight: 100,
        containers: vec![micro_examples::consignment::Container::default()],
        ..Default::default()
    };
    shipping.create_consignment(booking.clone()).await.unwrap();
    let load = drive(16, Duration::from_secs(3), {
        let shipping = shipping.clone();
        move || {
            let shipping = shipping.clone();
            async move {
                shipping
                    .get_consignments(micro_examples::consignment::GetRequest {})
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let (_, peak) = memory(consignment.id());
    let _ = std::process::Command::new("kill")
        .args([
            "-TERM",
            &consignment.id().to_string(),
            &vessel.id().to_string(),
        ])
        .status();
    let _ = consignment.wait();
    let _ = vessel.wait();

    println!();
    println!("| consignment example | value |");
    println!("|---|---|");
    println!("| RSS idle | {:.1} MiB |", idle as f64 / 1024.0);
    println!(
        "| peak RSS under load (16 concurrent GetConsignments, {:.0} req/s) | {:.1} MiB |",
        load.rps,
        peak as f64 / 1024.0
    );

    println!();
    println!("| release binary | size |");
    println!("|---|---|");
    for name in ["vessel", "consignment", "consignment-cli"] {
        for dir in [
            "target/release/examples",
            "target/x86_64-unknown-linux-gnu/release/examples",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join(name);
            if let Ok(meta) = std::fs::metadata(&path) {
                println!(
                    "| {dir}/{name} | {:.1} MiB |",
                    meta.len() as f64 / 1048576.0
                );
            }
        }
    }
    let images = std::process::Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}} {{.Size}}"])
        .output();
    if let Ok(out) = images {
        let text = String::from_utf8_lossy(&out.stdout);
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("vessel-service") || l.starts_with("consignment-"))
            .collect();
        if !ours.is_empty() {
            println!();
            println!("| image | size |");
            println!("|---|---|");
            for line in ours {
                let (name, size) = line.split_once(' ').unwrap_or((line, ""));
                println!("| {name} | {size} |");
            }
        }
    }
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--footprint-only") {
        return footprint().await;
    }
    if std::env::args().any(|a| a == "--profile-micro") {
        return profile_micro().await;
    }
    if std::env::args().any(|a| a == "--profile-tonic") {
        return profile_tonic().await;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--otlp-sink") {
        return otlp_sink(&args[i + 1]).await;
    }
    if args.iter().any(|a| a == "--observability") {
        let flag = |name: &str| args.iter().any(|a| a == name);
        return observability(flag("--otlp"), flag("--header")).await;
    }
    rpc().await;
    if std::env::args().any(|a| a == "--rpc-only") {
        return;
    }
    footprint().await;
}
