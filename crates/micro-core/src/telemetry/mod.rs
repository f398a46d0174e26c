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

/// The host and port of `host:port` (`[v6]:port` too), as the span attributes
/// `server.address`/`server.port` and `network.peer.*` want them. Called inside the
/// span macros, which evaluate their fields only for an enabled span.
pub(crate) fn split_host_port(address: &str) -> (&str, Option<u16>) {
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse::<u16>().ok(),
        ),
        None => (address, None),
    }
}

/// Marks `span` failed with `code`: `error.type` names the code and the span's
/// OpenTelemetry status is error.
pub(crate) fn record_error(span: &tracing::Span, code: tonic::Code) {
    span.record(semconv::ERROR_TYPE, semconv::code_name(code));
    span.record("otel.status_code", "error");
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_and_port_are_split_for_v4_v6_and_names() {
        assert_eq!(split_host_port("10.0.0.5:50051"), ("10.0.0.5", Some(50051)));
        assert_eq!(split_host_port("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(split_host_port("vessel:x"), ("vessel", None));
        assert_eq!(split_host_port("vessel"), ("vessel", None));
    }
}
