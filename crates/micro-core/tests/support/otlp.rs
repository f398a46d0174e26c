//! An OTLP/gRPC trace receiver: it collects every span exported to it, and draws the
//! traces it got as trees. The tests include it, and so does the demo's
//! `examples/trace-receiver`.

// Each crate that includes this module uses only part of it; what one leaves unused
// is not dead.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One received span, with the `service.name` of the resource that sent it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) service: String,
    pub(crate) span: Span,
}

impl Received {
    pub(crate) fn name(&self) -> &str {
        &self.span.name
    }

    /// An attribute's value, as a string (ints in decimal).
    pub(crate) fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }

    pub(crate) fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub(crate) fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub(crate) fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver's collected spans.
#[derive(Clone, Default)]
pub(crate) struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    pub(crate) fn all(&self) -> Vec<Received> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received (or `within` passes), and
    /// returns them.
    pub(crate) async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.all();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Receiver(Spans);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource in request.into_inner().resource_spans {
            let attributes: HashMap<String, String> = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .filter_map(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                        _ => None,
                    },
                )
                .collect();
            let service = attributes.get("service.name").cloned().unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        if let Ok(mut spans) = (self.0).0.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts a receiver on loopback: its `http://` endpoint and its spans.
pub(crate) async fn start() -> (String, Spans) {
    let (address, spans) = listen("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("starting the OTLP receiver: {e}"));
    (format!("http://{address}"), spans)
}

/// Starts a receiver listening on `address` (`host:port`, port 0 for any), serving
/// in a task of its own: the address it got, and its spans.
pub(crate) async fn listen(address: &str) -> std::io::Result<(std::net::SocketAddr, Spans)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let spans = Spans::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(spans.clone())))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    Ok((address, spans))
}

/// The spans as trees, one per trace, the trace that started first first: each span
/// on a line of its own (name, kind, `service.name`, duration), indented under its
/// parent, siblings in the order they started; a call's attempts (`micro.attempt`)
/// are marked as such, since they share the call's name. A span whose parent was not received is
/// drawn as a root of its trace.
pub(crate) fn trees(spans: &[Received]) -> String {
    let mut traces: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for span in spans {
        traces.entry(span.trace_id()).or_default().push(span);
    }
    let mut traces: Vec<(String, Vec<&Received>)> = traces.into_iter().collect();
    for (_, spans) in &mut traces {
        spans.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.end_time_unix_nano));
    }
    traces.sort_by_key(|(id, spans)| {
        (
            spans.first().map_or(0, |s| s.span.start_time_unix_nano),
            id.clone(),
        )
    });

    // Each line as (depth, name, kind, service, duration), to align the columns after.
    let mut out = String::new();
    for (id, spans) in &traces {
        let ids: HashSet<String> = spans.iter().map(|s| s.span_id()).collect();
        let mut lines = Vec::new();
        let mut drawn = HashSet::new();
        for root in spans
            .iter()
            .filter(|s| s.span.parent_span_id.is_empty() || !ids.contains(&s.parent_id()))
        {
            walk(root, 0, spans, &mut drawn, &mut lines);
        }
        // Spans in a parent cycle (never from a sane exporter) are listed flat.
        for span in spans {
            if !drawn.contains(&span.span_id()) {
                walk(span, 0, spans, &mut drawn, &mut lines);
            }
        }
        let _ = writeln!(
            out,
            "trace {id} ({} span{})",
            spans.len(),
            if spans.len() == 1 { "" } else { "s" }
        );
        let width = |column: fn(&Line) -> usize| lines.iter().map(column).max().unwrap_or(0);
        let name_width = width(|l| 2 * l.0 + l.1.chars().count());
        let kind_width = width(|l| l.2.len());
        let service_width = width(|l| l.3.chars().count());
        for (depth, name, kind, service, duration) in lines {
            let indented = format!("{}{name}", "  ".repeat(depth));
            let _ = writeln!(
                out,
                "  {indented:<name_width$}  {kind:<kind_width$}  {service:<service_width$}  {duration:>10}"
            );
        }
    }
    out
}

/// A span drawn: depth, name, kind, service, duration.
type Line = (usize, String, &'static str, String, String);

/// Adds `span`'s line and, under it, its children's.
fn walk(
    span: &Received,
    depth: usize,
    spans: &[&Received],
    drawn: &mut HashSet<String>,
    lines: &mut Vec<Line>,
) {
    let id = span.span_id();
    if !drawn.insert(id.clone()) {
        return;
    }
    let name = match span.attr("micro.attempt") {
        Some(attempt) => format!("{} (attempt {attempt})", span.name()),
        None => span.name().to_string(),
    };
    lines.push((
        depth,
        name,
        kind(&span.span),
        span.service.clone(),
        duration(&span.span),
    ));
    for child in spans.iter().filter(|s| s.parent_id() == id) {
        walk(child, depth + 1, spans, drawn, lines);
    }
}

/// A span's kind, as a word (`server`, `client`, ...).
fn kind(span: &Span) -> &'static str {
    match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "-",
    }
}

/// A span's duration, in milliseconds with three figures after the point.
fn duration(span: &Span) -> String {
    let nanos = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    format!("{:.3} ms", nanos as f64 / 1e6)
}
