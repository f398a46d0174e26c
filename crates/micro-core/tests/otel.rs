//! Traces exported over OTLP/gRPC to a real receiver: a call from a client to a
//! front service whose handler calls a back service and publishes an event. The
//! receiver must get one trace: client → attempt → server (front) → client → attempt
//! → server (back), and send → process for the event, with the conventions'
//! attributes (v1.40.0).
//!
//! One test in this file: the global subscriber can be installed once per process.
#![cfg(feature = "otel")]
// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/otlp.rs"]
mod otlp;
mod support;

use std::time::Duration;

use micro_core::telemetry::semconv;
use micro_core::{CallOptions, Context, Error, Request};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::Received;
use support::{Msg, PATH, msg};

const FRONT: &str = "test.front";
const BACK: &str = "test.back";
const TOPIC: &str = "test.created";

fn one<'a>(spans: &'a [Received], what: &str, pick: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what} span, got {}: {:#?}",
        found.len(),
        spans
            .iter()
            .map(|s| (s.name(), s.span.kind, s.attr(semconv::MICRO_SERVICE)))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Picks a dead node while there is one, so that a call is retried.
#[derive(Debug)]
struct DeadFirst;

impl micro_core::selector::Selector for DeadFirst {
    fn select(&self, _service: &str, nodes: &[&micro_core::registry::Node]) -> usize {
        nodes
            .iter()
            .position(|n| n.id.ends_with("-dead"))
            .unwrap_or(0)
    }
}

fn kind(span: &Received) -> SpanKind {
    SpanKind::try_from(span.span.kind).unwrap_or(SpanKind::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_client_servers_and_an_event() {
    let (endpoint, received) = otlp::start().await;
    let registry = support::registry();

    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let endpoint_back = endpoint.clone();
    // The back service subscribes to the event and answers calls; it starts first and
    // installs the default subscriber, exporting to the receiver.
    let back = support::start(BACK, &registry, move |s| {
        s.otlp_endpoint(endpoint_back)
            .handle(support::handler(
                "Svc",
                |_ctx: Context, req: Msg| async move { Ok(msg(&format!("back: {}", req.text))) },
            ))
            .unwrap()
            .subscribe(TOPIC, move |_ctx: Context, m: Msg| {
                let got_tx = got_tx.clone();
                async move {
                    let _ = got_tx.send(m.text);
                    Ok::<(), Error>(())
                }
            })
    })
    .await;

    // The front service's handler calls back with the handler's options and
    // publishes the event with them.
    let client = support::client(&registry);
    let front = support::start(FRONT, &registry, move |s| {
        let created = s.publisher::<Msg>(TOPIC);
        s.handle(support::handler("Svc", move |ctx: Context, req: Msg| {
            let client = client.clone();
            let created = created.clone();
            async move {
                if req.text == "missing" {
                    return Err(Error::not_found("test.front", "no such thing"));
                }
                let reply: Msg = client
                    .call(BACK, PATH, Request::new(req.clone(), ctx.call_options()))
                    .await?;
                created
                    .publish(Request::new(msg(&req.text), ctx.call_options()))
                    .await?;
                Ok(reply)
            }
        }))
        .unwrap()
    })
    .await;

    let caller = support::client(&registry);
    let reply: Msg = caller
        .call(FRONT, PATH, Request::new(msg("hi"), CallOptions::new()))
        .await
        .unwrap();
    assert_eq!(reply.text, "back: hi");
    let delivered = tokio::time::timeout(Duration::from_secs(5), got_rx.recv())
        .await
        .unwrap();
    assert_eq!(delivered.as_deref(), Some("hi"));
    // A failing call: NOT_FOUND is an error for the client, not for the server.
    let missing = caller
        .call::<Msg, Msg>(
            FRONT,
            PATH,
            Request::new(msg("missing"), CallOptions::new()),
        )
        .await;
    assert!(missing.is_err());
    // A retried call: a dead node of back first, then the live one.
    let dead = micro_core::registry::Service::new(BACK).node(micro_core::registry::Node::new(
        "test.back-dead",
        support::refusing_address(),
    ));
    registry.register(&dead, Default::default()).await.unwrap();
    let retried: Msg = caller
        .call(
            BACK,
            PATH,
            Request::new(msg("again"), CallOptions::new().selector(DeadFirst)),
        )
        .await
        .unwrap();
    assert_eq!(retried.text, "back: again");

    // Stopping flushes the export.
    front.stop().await.unwrap();
    back.stop().await.unwrap();

    let method = PATH.trim_start_matches('/');
    let spans = received
        .wait_for(Duration::from_secs(10), |spans| {
            spans.iter().any(|s| s.name() == format!("process {TOPIC}"))
                && spans
                    .iter()
                    .filter(|s| s.name() == method && s.span.kind == SpanKind::Server as i32)
                    .count()
                    >= 3
        })
        .await;

    let rpc = |s: &Received| s.name() == method;
    let ok = |s: &Received| s.attr(semconv::STATUS_CODE).as_deref() == Some("OK");
    let for_service =
        |s: &Received, name: &str| s.attr(semconv::MICRO_SERVICE).as_deref() == Some(name);

    // The first call: the caller's client span, its attempt, front's server span.
    let call = one(&spans, "client call to front", |s| {
        rpc(s)
            && kind(s) == SpanKind::Client
            && ok(s)
            && for_service(s, FRONT)
            && s.attr(semconv::MICRO_ATTEMPT).is_none()
    });
    let trace = call.trace_id();
    assert!(
        call.span.parent_span_id.is_empty(),
        "the caller's span is a root"
    );
    assert_eq!(call.attr(semconv::RPC_SYSTEM_NAME).as_deref(), Some("grpc"));
    assert_eq!(call.attr(semconv::RPC_METHOD).as_deref(), Some(method));

    let attempt = one(&spans, "attempt to front", |s| {
        rpc(s)
            && kind(s) == SpanKind::Client
            && for_service(s, FRONT)
            && s.trace_id() == trace
            && s.attr(semconv::MICRO_ATTEMPT).is_some()
    });
    assert_eq!(attempt.parent_id(), call.span_id());
    assert_eq!(attempt.attr(semconv::MICRO_ATTEMPT).as_deref(), Some("1"));
    let node = attempt.attr(semconv::MICRO_NODE_ID).unwrap_or_default();
    assert!(node.starts_with("test.front-"), "{node}");
    assert_eq!(
        attempt.attr(semconv::SERVER_ADDRESS).as_deref(),
        Some("127.0.0.1")
    );
    assert!(attempt.attr(semconv::SERVER_PORT).is_some());
    assert_eq!(attempt.attr(semconv::STATUS_CODE).as_deref(), Some("OK"));

    let front_server = one(&spans, "front's server span", |s| {
        rpc(s)
            && kind(s) == SpanKind::Server
            && s.trace_id() == trace
            && s.parent_id() == attempt.span_id()
    });
    assert_eq!(
        front_server.attr(semconv::STATUS_CODE).as_deref(),
        Some("OK")
    );
    assert_eq!(
        front_server.attr(semconv::NETWORK_PEER_ADDRESS).as_deref(),
        Some("127.0.0.1")
    );
    // The exporter was installed by the first service: its registry name.
    assert_eq!(front_server.service, BACK);

    // front's handler calls back with ctx.call_options(): children of its server span.
    let inner = one(&spans, "front's call to back", |s| {
        rpc(s)
            && kind(s) == SpanKind::Client
            && for_service(s, BACK)
            && s.attr(semconv::MICRO_ATTEMPT).is_none()
            && s.trace_id() == trace
    });
    assert_eq!(inner.parent_id(), front_server.span_id());
    let inner_attempt = one(&spans, "attempt to back", |s| {
        rpc(s)
            && kind(s) == SpanKind::Client
            && for_service(s, BACK)
            && s.attr(semconv::MICRO_ATTEMPT).is_some()
            && s.trace_id() == trace
    });
    assert_eq!(inner_attempt.parent_id(), inner.span_id());
    let back_server = one(&spans, "back's server span", |s| {
        rpc(s) && kind(s) == SpanKind::Server && s.parent_id() == inner_attempt.span_id()
    });
    assert_eq!(back_server.trace_id(), trace);
    assert_eq!(
        back_server.attr(semconv::MICRO_SERVICE).as_deref(),
        Some(BACK)
    );

    // The event: send is a child of front's server span, process a child of send.
    let send = one(&spans, "send", |s| s.name() == format!("send {TOPIC}"));
    assert_eq!(kind(send), SpanKind::Producer);
    assert_eq!(send.trace_id(), trace);
    assert_eq!(send.parent_id(), front_server.span_id());
    assert_eq!(
        send.attr(semconv::MESSAGING_DESTINATION_NAME).as_deref(),
        Some(TOPIC)
    );
    let process = one(&spans, "process", |s| {
        s.name() == format!("process {TOPIC}")
    });
    assert_eq!(kind(process), SpanKind::Consumer);
    assert_eq!(process.trace_id(), trace);
    assert_eq!(process.parent_id(), send.span_id());
    assert_eq!(
        process.attr(semconv::MESSAGING_MESSAGE_ID),
        send.attr(semconv::MESSAGING_MESSAGE_ID)
    );

    // The failing call: NOT_FOUND on both sides, an error only for the client.
    let failed = one(&spans, "failed client call", |s| {
        rpc(s)
            && kind(s) == SpanKind::Client
            && s.attr(semconv::MICRO_ATTEMPT).is_none()
            && s.attr(semconv::STATUS_CODE).as_deref() == Some("NOT_FOUND")
    });
    assert_eq!(
        failed.attr(semconv::ERROR_TYPE).as_deref(),
        Some("NOT_FOUND")
    );
    assert_ne!(
        failed.trace_id(),
        trace,
        "a new call from the top is a new trace"
    );
    let failed_server = one(&spans, "failed server span", |s| {
        rpc(s) && kind(s) == SpanKind::Server && s.trace_id() == failed.trace_id()
    });
    assert_eq!(
        failed_server.attr(semconv::STATUS_CODE).as_deref(),
        Some("NOT_FOUND")
    );
    let status = failed_server.span.status.clone().unwrap_or_default();
    assert_ne!(
        status.code, 2,
        "NOT_FOUND is not a server error: {status:?}"
    );
    let client_status = failed.span.status.clone().unwrap_or_default();
    assert_eq!(
        client_status.code, 2,
        "a client span is in error on any non-OK: {client_status:?}"
    );

    // The retried call: two attempts under one client span, the first on the dead
    // node and failed, the second on the live one; the server saw only the second.
    let retried = one(&spans, "retried call", |s| {
        rpc(s) && kind(s) == SpanKind::Client && s.attr(semconv::MICRO_RETRIES).is_some()
    });
    assert_eq!(retried.attr(semconv::MICRO_RETRIES).as_deref(), Some("1"));
    assert_eq!(retried.attr(semconv::STATUS_CODE).as_deref(), Some("OK"));
    let mut attempts: Vec<&Received> = spans
        .iter()
        .filter(|s| s.parent_id() == retried.span_id())
        .collect();
    attempts.sort_by_key(|s| s.attr(semconv::MICRO_ATTEMPT));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        attempts[0].attr(semconv::MICRO_ATTEMPT).as_deref(),
        Some("1")
    );
    assert_eq!(
        attempts[0].attr(semconv::MICRO_NODE_ID).as_deref(),
        Some("test.back-dead")
    );
    assert!(
        attempts[0].attr(semconv::ERROR_TYPE).is_some(),
        "{:?}",
        attempts[0]
    );
    assert_ne!(
        attempts[0].attr(semconv::STATUS_CODE).as_deref(),
        Some("OK")
    );
    assert_eq!(
        attempts[1].attr(semconv::MICRO_ATTEMPT).as_deref(),
        Some("2")
    );
    assert_eq!(
        attempts[1].attr(semconv::STATUS_CODE).as_deref(),
        Some("OK")
    );
    let retried_server = one(&spans, "retried call's server span", |s| {
        kind(s) == SpanKind::Server && s.trace_id() == retried.trace_id()
    });
    assert_eq!(retried_server.parent_id(), attempts[1].span_id());

    // Health checks and reflection make no spans.
    assert!(
        !spans.iter().any(|s| s.name().starts_with("grpc.health") || s.name().starts_with("grpc.reflection")),
        "health or reflection spans were exported"
    );
}
