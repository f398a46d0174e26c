//! The server span of one handled call: opened when the request arrives (child of the
//! caller's trace context), entered while the call is polled, closed with the status
//! the response carries (in its head when trailers-only, else in its trailers;
//! CANCELLED when the response is dropped unfinished).

use crate::telemetry::{self, TARGET, semconv};

/// The path prefixes that get no span: health checks and reflection.
const UNOBSERVED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// The span of one call, and whether its status was recorded.
pub(super) struct Observed {
    span: tracing::Span,
    recorded: bool,
}

impl Observed {
    /// The span of a call to `request`'s path from `remote` on the server of
    /// registry name `served`, or `None` for health checks, reflection, and when no
    /// subscriber wants the span.
    pub(super) fn start<B>(
        request: &http::Request<B>,
        remote: &str,
        served: Option<&str>,
    ) -> Option<Self> {
        let path = request.uri().path();
        if UNOBSERVED.iter().any(|prefix| path.starts_with(prefix)) {
            return None;
        }
        let method = path.strip_prefix('/').unwrap_or(path);
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "serve",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = method,
            rpc.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            network.peer.address = telemetry::split_host_port(remote).0,
            network.peer.port = telemetry::split_host_port(remote).1,
            micro.service = served,
        );
        if span.is_disabled() {
            return None;
        }
        telemetry::set_parent_from_headers(&span, request.headers());
        Some(Self {
            span,
            recorded: false,
        })
    }

    /// The call's span.
    pub(super) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Records the status in `headers` (a response head or its trailers), if any.
    /// Returns whether it was there.
    pub(super) fn status_in(&mut self, headers: &http::HeaderMap) -> bool {
        let Some(code) = headers
            .get(super::call::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        else {
            return false;
        };
        self.record(tonic::Code::from_i32(code));
        true
    }

    /// Records how the call ended: the server rule, only the codes that say the
    /// server failed are errors.
    pub(super) fn record(&mut self, code: tonic::Code) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let name = semconv::code_name(code);
        self.span.record(semconv::STATUS_CODE, name);
        if code != tonic::Code::Ok {
            self.span.record(semconv::ERROR_TYPE, name);
        }
        if semconv::server_error(code) {
            self.span.record("otel.status_code", "error");
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // Neither head nor trailers said: the caller went away first.
        self.record(tonic::Code::Cancelled);
    }
}
