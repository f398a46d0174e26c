//! The worked example's trace: vessel, consignment and the CLI as real processes
//! exporting over OTLP/gRPC (`OTEL_EXPORTER_OTLP_ENDPOINT`) to a receiver in this
//! test. Booking one consignment must make one trace across the three processes and
//! the `consignment.created` event's delivery. Consignment also serves its Prometheus
//! metrics (`MICRO_METRICS_ADDRESS`), scraped after the booking.
//!
//! What users meet when things go wrong is here too: a collector that is down or
//! never answers must not hold a stopping service past its bounds, and idle or slow
//! clients on `/metrics` must not keep scrapes or calls out.
//!
//! Run inside a private network namespace (`make test` does); every process is told
//! `MICRO_MDNS_INTERFACES=loopback`.
#![cfg(feature = "otel")]
// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/micro-core/tests/support/otlp.rs"]
mod otlp;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MdnsRegistry, Registry};
use micro_core::telemetry::semconv;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::Received;

const CONSIGNMENT: &str = "go.micro.srv.consignment";
const VESSEL: &str = "go.micro.srv.vessel";
const TOPIC: &str = "consignment.created";

/// Where cargo put the example binaries: next to this test's `deps` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build --examples)",
        path.display()
    );
    path
}

/// A child process, stopped with SIGTERM (so it flushes its spans) by `stop`, killed
/// when dropped still running.
struct Running(Child);

impl Running {
    fn start(name: &str, endpoint: &str, envs: &[(&str, &str)]) -> Self {
        let child = Command::new(example(name))
            .envs(envs.iter().copied())
            .env("MICRO_MDNS_INTERFACES", "loopback")
            .env("RUST_LOG", "warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env_remove("OTEL_SERVICE_NAME")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self(child)
    }

    fn stop(self) {
        self.stop_timed();
    }

    /// Sends SIGTERM; returns how long the process took to exit, and its status.
    fn stop_timed(mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = started + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for the child") {
                return (started.elapsed(), status);
            }
            assert!(Instant::now() < deadline, "did not stop within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_for(registry: &MdnsRegistry, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.get_service(name).await.is_err() {
        assert!(Instant::now() < deadline, "{name} never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address no one listens on, for a child process to serve on.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").to_string()
}

/// `GET /metrics` over plain HTTP/1.1 (retried while the server is not up yet): the
/// body of the 200 answer.
fn scrape(address: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                write!(
                    stream,
                    "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
                assert!(head.starts_with("HTTP/1.1 200"), "scrape answered {head}");
                // The text is sent whole, with its length: no chunks to take apart.
                assert!(
                    !head
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked"),
                    "chunked answer: {head}"
                );
                return body.to_string();
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "metrics on {address}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A Prometheus text line's labels: `name{a="x",b="y"} 3` gives `[(a, x), (b, y)]`.
fn labels(set: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = set;
    while let Some((key, value)) = rest.split_once("=\"") {
        let mut text = String::new();
        let mut chars = value.char_indices();
        let mut end = value.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        text.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => text.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_string(), text));
        rest = &value[end..];
    }
    labels
}

/// The value of the one sample of `name` whose labels include `wanted`; fails
/// unless there is exactly one.
fn sample(metrics: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = metrics
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let set = series
                .strip_prefix(name)?
                .strip_prefix('{')?
                .strip_suffix('}')?;
            let have = labels(set);
            wanted
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
                .then(|| value.parse::<f64>().expect("a sample's value"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} sample with {wanted:?}, got {found:?} in:\n{metrics}"
    );
    found[0]
}

fn kind(span: &Received) -> SpanKind {
    SpanKind::try_from(span.span.kind).unwrap_or(SpanKind::Unspecified)
}

fn one<'a>(spans: &'a [Received], what: &str, pick: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what} span, got {}: {:#?}",
        found.len(),
        spans
            .iter()
            .map(|s| (&s.service, s.name(), s.span.kind, s.trace_id()))
            .collect::<Vec<_>>()
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_across_cli_consignment_vessel_and_the_event() {
    let (endpoint, received) = otlp::start().await;
    let registry = MdnsRegistry::builder()
        .loopback_only()
        .build()
        .expect("mdns registry");
    // Without the `metrics` feature the examples have no metrics to serve.
    let metrics_address = cfg!(feature = "metrics").then(free_address);
    let vessel = Running::start("vessel", &endpoint, &[]);
    let consignment = Running::start(
        "consignment",
        &endpoint,
        &metrics_address
            .as_deref()
            .map(|address| vec![("MICRO_METRICS_ADDRESS", address)])
            .unwrap_or_default(),
    );
    wait_for(&registry, VESSEL).await;
    wait_for(&registry, CONSIGNMENT).await;

    let out = Command::new(example("consignment-cli"))
        .env("MICRO_MDNS_INTERFACES", "loopback")
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running consignment-cli");
    assert!(
        out.status.success(),
        "cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The event is delivered after the call returns: wait for its span, then stop
    // the services (which flushes what they buffered).
    let process_name = format!("process {TOPIC}");
    received
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.name() == process_name)
        })
        .await;

    // The booking as consignment's metrics count it: the call it served, its call to
    // vessel, and the event it published.
    if let Some(metrics_address) = &metrics_address {
        let metrics = scrape(metrics_address);
        let served_calls = sample(
            &metrics,
            "rpc_server_call_duration_seconds_count",
            &[
                ("rpc_system_name", "grpc"),
                ("micro_service", CONSIGNMENT),
                (
                    "rpc_method",
                    "go.micro.srv.consignment.ShippingService/CreateConsignment",
                ),
                ("rpc_status_code", "OK"),
            ],
        );
        assert!(
            served_calls >= 1.0,
            "served CreateConsignment {served_calls} times"
        );
        let vessel_calls = sample(
            &metrics,
            "rpc_client_call_duration_seconds_count",
            &[
                ("rpc_system_name", "grpc"),
                ("micro_service", VESSEL),
                (
                    "rpc_method",
                    "go.micro.srv.vessel.VesselService/FindAvailable",
                ),
                ("rpc_status_code", "OK"),
            ],
        );
        assert!(
            vessel_calls >= 1.0,
            "called FindAvailable {vessel_calls} times"
        );
        let published = sample(
            &metrics,
            "micro_broker_messages_published_total",
            &[
                ("messaging_system", "registry"),
                ("messaging_destination_name", TOPIC),
                ("result", "ok"),
            ],
        );
        assert!(published >= 1.0, "published {published} events on {TOPIC}");
    }

    consignment.stop();
    vessel.stop();
    let spans = received
        .wait_for(Duration::from_secs(10), |spans| {
            spans
                .iter()
                .any(|s| s.service == VESSEL && kind(s) == SpanKind::Server)
                && spans.iter().any(|s| s.name() == process_name)
        })
        .await;

    let is_attempt = |s: &Received| s.attr(semconv::MICRO_ATTEMPT).is_some();
    let creates = |s: &Received| {
        s.attr(semconv::RPC_METHOD)
            .is_some_and(|m| m.ends_with("/CreateConsignment"))
    };

    let cli_call = one(&spans, "cli's CreateConsignment call", |s| {
        s.service == "consignment-cli"
            && kind(s) == SpanKind::Client
            && creates(s)
            && !is_attempt(s)
    });
    let trace = cli_call.trace_id();
    assert_eq!(
        cli_call.attr(semconv::MICRO_SERVICE).as_deref(),
        Some(CONSIGNMENT)
    );
    assert_eq!(cli_call.attr(semconv::STATUS_CODE).as_deref(), Some("OK"));
    let cli_attempt = one(&spans, "cli's attempt", |s| {
        s.service == "consignment-cli" && creates(s) && is_attempt(s)
    });
    assert_eq!(cli_attempt.parent_id(), cli_call.span_id());

    let served = one(&spans, "consignment's server span", |s| {
        s.service == CONSIGNMENT && kind(s) == SpanKind::Server && creates(s)
    });
    assert_eq!(served.trace_id(), trace, "one trace across processes");
    assert_eq!(served.parent_id(), cli_attempt.span_id());

    let to_vessel = one(&spans, "consignment's call to vessel", |s| {
        s.service == CONSIGNMENT
            && kind(s) == SpanKind::Client
            && !is_attempt(s)
            && s.attr(semconv::MICRO_SERVICE).as_deref() == Some(VESSEL)
    });
    assert_eq!(to_vessel.trace_id(), trace);
    assert_eq!(to_vessel.parent_id(), served.span_id());
    let vessel_attempt = one(&spans, "consignment's attempt to vessel", |s| {
        s.service == CONSIGNMENT
            && is_attempt(s)
            && s.attr(semconv::MICRO_SERVICE).as_deref() == Some(VESSEL)
    });
    assert_eq!(vessel_attempt.parent_id(), to_vessel.span_id());
    let vessel_served = one(&spans, "vessel's server span", |s| {
        s.service == VESSEL
            && kind(s) == SpanKind::Server
            && s.attr(semconv::RPC_METHOD)
                .is_some_and(|m| m.ends_with("/FindAvailable"))
    });
    assert_eq!(vessel_served.trace_id(), trace);
    assert_eq!(vessel_served.parent_id(), vessel_attempt.span_id());

    let send = one(&spans, "send", |s| s.name() == format!("send {TOPIC}"));
    assert_eq!(send.service, CONSIGNMENT);
    assert_eq!(send.trace_id(), trace);
    assert_eq!(send.parent_id(), served.span_id());
    // The registry broker's delivery to vessel is a call inside the publish.
    let delivery = one(&spans, "the broker's delivery call", |s| {
        s.service == CONSIGNMENT
            && kind(s) == SpanKind::Client
            && !is_attempt(s)
            && s.attr(semconv::MICRO_SERVICE).as_deref() == Some("micro.broker")
    });
    assert_eq!(delivery.trace_id(), trace);
    assert_eq!(delivery.parent_id(), send.span_id());
    let process = one(&spans, "process", |s| s.name() == process_name);
    assert_eq!(process.service, VESSEL);
    assert_eq!(process.trace_id(), trace);
    assert_eq!(process.parent_id(), send.span_id());
}

/// A vessel booking through a client of this test: a call that makes vessel a span.
async fn find_vessel(registry: &Arc<MdnsRegistry>) -> String {
    let client = micro_core::Client::new(
        Arc::clone(registry) as Arc<dyn Registry>,
        Arc::new(micro_core::transport::TcpTransport::default()),
    );
    let vessels = micro_examples::vessel::VesselService::new(VESSEL, client);
    vessels
        .find_available(micro_examples::vessel::Specification {
            capacity: 1,
            max_weight: 100,
        })
        .await
        .expect("vessel answers")
        .vessel
        .expect("a vessel")
        .id
}

/// A collector that accepts connections and never says a word.
fn hanging_collector() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let address = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_down_or_hanging_does_not_hold_a_stopping_service() {
    let registry = Arc::new(
        MdnsRegistry::builder()
            .loopback_only()
            .build()
            .expect("mdns registry"),
    );
    for (collector, endpoint) in [
        ("down", format!("http://{}", free_address())),
        ("hanging", hanging_collector()),
    ] {
        let vessel = Running::start("vessel", &endpoint, &[]);
        wait_for(&registry, VESSEL).await;
        // Spans to export: vessel's server span of this call.
        assert_eq!(find_vessel(&registry).await, "vessel001");
        let (took, status) = vessel.stop_timed();
        eprintln!("collector {collector}: stopped in {took:?}");
        assert!(
            status.success(),
            "collector {collector}: vessel exited with {status}"
        );
        // The example's bounds: its grace period (5 s, mostly unused: nothing is in
        // flight) and two seconds to flush its spans.
        assert!(
            took < Duration::from_secs(7),
            "collector {collector}: vessel took {took:?} to stop"
        );
        while registry.get_service(VESSEL).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_on_metrics_keep_neither_scrapes_nor_calls_out() {
    let registry = Arc::new(
        MdnsRegistry::builder()
            .loopback_only()
            .build()
            .expect("mdns registry"),
    );
    let metrics_address = free_address();
    let vessel = Running::start(
        "vessel",
        &format!("http://{}", free_address()),
        &[("MICRO_METRICS_ADDRESS", metrics_address.as_str())],
    );
    wait_for(&registry, VESSEL).await;
    scrape(&metrics_address);

    // More connections than the endpoint keeps: silent ones, and ones stuck halfway
    // through a request's head.
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&metrics_address).expect("connecting to /metrics"))
        .collect();
    for stream in idle.iter_mut().skip(90) {
        stream.write_all(b"GET /metr").expect("a partial request");
    }
    let started = Instant::now();
    let metrics = scrape(&metrics_address);
    let took = started.elapsed();
    assert!(
        metrics.contains("rpc_server_call_duration_seconds"),
        "{metrics}"
    );
    assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    assert_eq!(find_vessel(&registry).await, "vessel001");

    // The oldest of them were cut to make room.
    let oldest = &mut idle[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 16];
    match oldest.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the oldest idle connection is still open: {other:?}"),
    }
    drop(idle);
    let (_, status) = vessel.stop_timed();
    assert!(status.success(), "vessel exited with {status}");
}
