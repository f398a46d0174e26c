//! Traces: spans for every call, W3C trace context propagation and, with the `otel`
//! feature, export over OTLP/gRPC.
//!
//! micro always opens `tracing` spans (target `micro_core::rpc`): one per handled call
//! (server), one per outgoing call (client) with a child per attempt, `send <topic>`
//! per publish and `process <topic>` per delivery. Their attributes follow the
//! OpenTelemetry semantic conventions v1.40.0 ([`semconv`]). With the `otel`
//! feature they also carry the trace context: `traceparent`, `tracestate` and
//! `baggage` go out in every call's metadata and every message's headers, and come in
//! as the parent of the server and consumer spans.
//!
//! Export (`Telemetry`, feature `otel`) is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or `Service::telemetry`
//! names an endpoint): the default subscriber a service installs then has an
//! OpenTelemetry layer beside its log. The service name is `OTEL_SERVICE_NAME`, else
//! the registry name; the sampler is `OTEL_TRACES_SAMPLER` (default
//! `parentbased_always_on`). With no endpoint there is no layer and no exporter.

#[cfg(feature = "otel")]
mod otlp;
mod propagation;
pub mod semconv;

#[cfg(feature = "otel")]
pub use otlp::{BoxedLayer, Telemetry, TelemetryGuard};
pub(crate) use propagation::{inject_map, inject_metadata};
pub use propagation::{set_parent_from_headers, set_parent_from_message};

/// The `tracing` target of micro's call and message spans.
pub const TARGET: &str = "micro_core::rpc";

/// Marks `span` failed with `code`: `error.type` names the code and the span's
/// OpenTelemetry status is error.
pub(crate) fn record_error(span: &tracing::Span, code: tonic::Code) {
    span.record(semconv::ERROR_TYPE, semconv::code_name(code));
    span.record("otel.status_code", "error");
}
