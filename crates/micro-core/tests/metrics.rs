//! Metrics (feature `metrics`): a service serves `GET /metrics`; its calls, a failing
//! call, a call retried past a dead node and an event show up with the right labels
//! and counts, and promtool accepts the text. Run it in a private network namespace:
//! `scripts/in-netns cargo nextest run -p micro-core --all-features --test metrics`.
//! It needs `promtool` (scripts/deps.sh installs it; `PROMTOOL` may name it) and fails
//! without it.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use micro_core::broker::{Broker, MemoryBroker};
use micro_core::client::Ejection;
use micro_core::event::Publisher;
use micro_core::registry::{Node, Service as Record};
use micro_core::selector::Selector;
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Error, Request, Service, ServiceError};
use support::{Msg, PATH, handler, msg, refusing_address, registry, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `GET path` over a plain TCP connection; the status line, the headers and
/// the body.
async fn get(address: &str, path: &str) -> std::io::Result<(String, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
    let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_lowercase(), body.to_string()))
}

/// The value of the sample `name{labels}` (labels in the order they are written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn promtool() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

/// Picks the node whose id starts with "dead" when there is one.
#[derive(Debug)]
struct DeadFirst;

impl Selector for DeadFirst {
    fn select(&self, _service: &str, nodes: &[&Node]) -> usize {
        nodes
            .iter()
            .position(|n| n.id.starts_with("dead"))
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_service_serves_its_calls_retries_and_events_on_metrics() {
    // Fail now, not after the calls, when promtool is missing.
    let version = Command::new(promtool()).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "promtool is needed (scripts/deps.sh installs it, or set PROMTOOL): {:?}",
        version.err()
    );

    let registry = registry();
    let metrics_address = refusing_address();
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let service = start("metrics.greeter", &registry, {
        let metrics_address = metrics_address.clone();
        let broker = Arc::clone(&broker);
        move |s| {
            s.metrics_address(metrics_address)
                .broker(broker)
                .subscribe("metrics.greeted", move |_, m: Msg| {
                    let events_tx = events_tx.clone();
                    async move {
                        let _ = events_tx.send(m.text);
                        Ok(())
                    }
                })
                .handle(handler("Svc", |_, m: Msg| async move {
                    if m.text == "fail" {
                        Err(Error::bad_request("metrics.greeter", "fail was asked for"))
                    } else {
                        Ok(msg("ok"))
                    }
                }))
                .unwrap()
        }
    })
    .await;

    let client = Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default()));
    for _ in 0..3 {
        let reply: Msg = client
            .call("metrics.greeter", PATH, msg("hi"))
            .await
            .unwrap();
        assert_eq!(reply.text, "ok");
    }
    let err = client
        .call::<_, Msg>("metrics.greeter", PATH, msg("fail"))
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    let err = client
        .call::<_, Msg>("metrics.greeter", "/test.Svc/Nope", msg("hi"))
        .await
        .unwrap_err();
    assert_eq!(
        err.grpc_code(),
        micro_core::tonic::Code::Unimplemented,
        "{err}"
    );

    // A dead node, tried first: refused, ejected, and the call retried on the live one.
    let dead = Record::new("metrics.greeter").node(Node::new("dead-1", refusing_address()));
    registry.register(&dead, Default::default()).await.unwrap();
    // A new client, so that its cache has the dead node from the start; a short
    // penalty, so that the node is probed again soon.
    let client = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .ejection(Ejection::default().base_penalty(Duration::from_millis(50)))
        .build();
    let reply: Msg = client
        .call(
            "metrics.greeter",
            PATH,
            Request::new(msg("again"), CallOptions::new().selector(DeadFirst)),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "ok");
    // The dead node comes back; once its penalty is over, a call to it restores it.
    let back = start("metrics.greeter", &registry, move |s| {
        s.address(dead.nodes[0].address.clone())
            .handle(handler("Svc", |_, _| async move { Ok(msg("back")) }))
            .unwrap()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply: Msg = client
        .call(
            "metrics.greeter",
            PATH,
            Request::new(msg("probe"), CallOptions::new().selector(DeadFirst)),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "back");

    Publisher::<Msg>::new("metrics.greeted", Arc::clone(&broker))
        .publish(msg("event"))
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(delivered.ok().flatten().as_deref(), Some("event"));

    let (status, headers, text) = get(&metrics_address, "/metrics").await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    let server = |method: &str, code: &str| {
        format!(
            "rpc_server_call_duration_seconds_count{{rpc_system_name=\"grpc\",micro_service=\"metrics.greeter\",rpc_method=\"{method}\",rpc_status_code=\"{code}\"}}"
        )
    };
    let client_calls = |method: &str, code: &str| {
        format!(
            "rpc_client_call_duration_seconds_count{{rpc_system_name=\"grpc\",micro_service=\"metrics.greeter\",rpc_method=\"{method}\",rpc_status_code=\"{code}\"}}"
        )
    };
    let expected = [
        // Three calls, the retried one and the probe reached a server and answered OK.
        (server("test.Svc/Call", "OK"), 5.0),
        (server("test.Svc/Call", "INVALID_ARGUMENT"), 1.0),
        // A path with no route is counted under one label, not its own.
        (server("_OTHER", "UNIMPLEMENTED"), 1.0),
        (client_calls("test.Svc/Call", "OK"), 5.0),
        (client_calls("test.Svc/Call", "INVALID_ARGUMENT"), 1.0),
        (client_calls("test.Svc/Nope", "UNIMPLEMENTED"), 1.0),
        (
            "micro_client_retries_total{micro_service=\"metrics.greeter\",rpc_method=\"test.Svc/Call\"}"
                .to_string(),
            1.0,
        ),
        (
            "micro_client_nodes_ejected_total{micro_service=\"metrics.greeter\",reason=\"refused\"}"
                .to_string(),
            1.0,
        ),
        (
            "micro_client_nodes_restored_total{micro_service=\"metrics.greeter\"}".to_string(),
            1.0,
        ),
        (
            "micro_server_calls_in_flight{micro_service=\"metrics.greeter\"}".to_string(),
            0.0,
        ),
        (
            "micro_client_calls_in_flight{micro_service=\"metrics.greeter\"}".to_string(),
            0.0,
        ),
        (
            "micro_broker_messages_published_total{messaging_system=\"memory\",messaging_destination_name=\"metrics.greeted\",result=\"ok\"}"
                .to_string(),
            1.0,
        ),
        (
            "micro_broker_messages_delivered_total{messaging_destination_name=\"metrics.greeted\",result=\"ok\"}"
                .to_string(),
            1.0,
        ),
    ];
    for (series, value) in &expected {
        assert_eq!(sample(&text, series), Some(*value), "{series} in\n{text}");
    }
    // The first call of each client missed its cache; later ones hit it.
    let lookups = |result: &str| {
        sample(
            &text,
            &format!(
                "micro_registry_lookups_total{{micro_service=\"metrics.greeter\",result=\"{result}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(lookups("miss") >= 2.0, "{text}");
    assert!(lookups("hit") >= 3.0, "{text}");
    for family in [
        "# TYPE rpc_server_call_duration_seconds histogram",
        "# TYPE micro_registry_queries_total counter",
        "# TYPE micro_registry_errors_total counter",
        "# TYPE micro_registry_stale_served_total counter",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    assert!(sample(&text, "micro_registry_queries_total").unwrap_or(0.0) >= 1.0);
    // No node id nor address is a label.
    assert!(
        !text.contains("dead-1") && !text.contains("127.0.0.1"),
        "{text}"
    );

    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}\n{}{}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let (status, _, _) = get(&metrics_address, "/other").await.unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The endpoint stops with the service.
    back.stop().await.unwrap();
    service.stop().await.unwrap();
    assert!(get(&metrics_address, "/metrics").await.is_err());
}

#[tokio::test]
async fn a_bad_metrics_address_is_a_config_error() {
    let registry = registry();
    let run = Service::from_config("metrics.bad", micro_core::Config::default())
        .registry(Arc::clone(&registry))
        .address("127.0.0.1:0")
        .metrics_address("nowhere")
        .run_until(std::future::pending())
        .await;
    match run {
        Err(ServiceError::Config(e)) => {
            assert!(
                e.to_string()
                    .starts_with("metrics_address=\"nowhere\": expected host:port"),
                "{e}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// The child of `micro_metrics_address_from_the_environment_is_checked`: reads the
/// environment the parent set and prints the error.
#[test]
fn child_reads_the_environment() {
    if std::env::var_os("METRICS_TEST_CHILD").is_none() {
        return;
    }
    match Service::new("metrics.env") {
        Err(e) => println!("error: {e}"),
        Ok(_) => println!("no error"),
    }
}

#[test]
fn micro_metrics_address_from_the_environment_is_checked() {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["child_reads_the_environment", "--exact", "--nocapture"])
        .env("METRICS_TEST_CHILD", "1")
        .env("MICRO_METRICS_ADDRESS", "9090")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        out.contains("error: configuration: MICRO_METRICS_ADDRESS=\"9090\": expected host:port"),
        "{out}"
    );
}

#[tokio::test]
async fn a_taken_metrics_address_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let run = Service::from_config("metrics.taken", micro_core::Config::default())
        .registry(registry())
        .address("127.0.0.1:0")
        .metrics_address(address.clone())
        .run_until(std::future::pending())
        .await;
    match run {
        Err(ServiceError::Listen { address: at, .. }) => assert_eq!(at, address),
        other => panic!("expected a listen error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_call_is_measured_until_its_stream_ends() {
    let registry = registry();
    let metrics_address = refusing_address();
    let service = start("metrics.streamer", &registry, {
        let metrics_address = metrics_address.clone();
        move |s| {
            s.metrics_address(metrics_address)
                .handle(
                    micro_core::server::Handler::new("test", "Svc").server_streaming(
                        "Count",
                        "Msg",
                        "Msg",
                        |_, _: Msg, tx: micro_core::stream::Sender<Msg>| async move {
                            for n in 0..3 {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                tx.send(msg(&n.to_string())).await?;
                            }
                            Ok(())
                        },
                    ),
                )
                .unwrap()
        }
    })
    .await;
    let client = Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default()));
    // Read to its end: OK, and the duration covers the three messages.
    let mut stream = client
        .server_streaming::<Msg, Msg>("metrics.streamer", "/test.Svc/Count", msg("go"))
        .await
        .unwrap();
    let mut got = 0;
    while let Some(item) = stream.recv().await {
        item.unwrap();
        got += 1;
    }
    assert_eq!(got, 3);
    // Dropped after one message: CANCELLED.
    let mut stream = client
        .server_streaming::<Msg, Msg>("metrics.streamer", "/test.Svc/Count", msg("go"))
        .await
        .unwrap();
    stream.recv().await.unwrap().unwrap();
    drop(stream);

    let (_, _, text) = get(&metrics_address, "/metrics").await.unwrap();
    let series = |stat: &str, code: &str| {
        format!(
            "rpc_client_call_duration_seconds_{stat}{{rpc_system_name=\"grpc\",micro_service=\"metrics.streamer\",rpc_method=\"test.Svc/Count\",rpc_status_code=\"{code}\"}}"
        )
    };
    assert_eq!(sample(&text, &series("count", "OK")), Some(1.0), "{text}");
    let took = sample(&text, &series("sum", "OK")).unwrap();
    assert!(took >= 0.3, "the stream's call took {took} s by its metric");
    assert_eq!(
        sample(&text, &series("count", "CANCELLED")),
        Some(1.0),
        "{text}"
    );
    service.stop().await.unwrap();
}
