//! The points where micro records metrics: one-line calls from the server, the client
//! and the broker. Without the feature `metrics` every one is an empty inline
//! function, so the code that calls them needs no `cfg`.

#[cfg(feature = "metrics")]
pub(crate) use with_metrics::*;
#[cfg(not(feature = "metrics"))]
pub(crate) use without_metrics::*;

#[cfg(feature = "metrics")]
mod with_metrics {
    use std::collections::HashSet;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Poll};

    use prometheus_client::metrics::gauge::Gauge;
    use tokio::time::Instant;

    use crate::metrics::{OTHER_METHOD, global};
    use crate::server::call::Body;

    /// The paths that do not count as calls: health checks and reflection.
    const UNCOUNTED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

    /// What a server's calls are labelled with: the registry name it serves and the
    /// paths it has routes for.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct ServerScope(Option<Arc<Scope>>);

    #[derive(Debug)]
    struct Scope {
        service: String,
        paths: HashSet<String>,
    }

    impl ServerScope {
        /// The scope of a server registered as `service` with routes `paths`
        /// (`/package.Service/Method`).
        pub(crate) fn new<'a>(service: &str, paths: impl Iterator<Item = &'a str>) -> Self {
            Self(Some(Arc::new(Scope {
                service: service.to_string(),
                paths: paths
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string)
                    .collect(),
            })))
        }
    }

    /// One call a server handles, from its request to its last byte.
    #[derive(Debug)]
    pub(crate) struct ServerCall {
        scope: Arc<Scope>,
        method: Option<String>,
        started: Instant,
        in_flight: Gauge,
        recorded: bool,
    }

    /// A server call starts on `path`; `None` when not counted.
    pub(crate) fn server_call(scope: &ServerScope, path: &str) -> Option<ServerCall> {
        let scope = scope.0.as_ref()?;
        if UNCOUNTED.iter().any(|prefix| path.starts_with(prefix)) {
            return None;
        }
        let method = scope
            .paths
            .contains(path)
            .then(|| path.trim_start_matches('/').to_string());
        let in_flight = global().in_flight(true, &scope.service);
        in_flight.inc();
        Some(ServerCall {
            scope: Arc::clone(scope),
            method,
            started: Instant::now(),
            in_flight,
            recorded: false,
        })
    }

    impl ServerCall {
        fn record(&mut self, code: tonic::Code) {
            if self.recorded {
                return;
            }
            self.recorded = true;
            global().server_call(
                &self.scope.service,
                self.method.as_deref().unwrap_or(OTHER_METHOD),
                code,
                self.started.elapsed(),
            );
        }
    }

    impl Drop for ServerCall {
        fn drop(&mut self) {
            // Dropped before its status was sent: the caller went away.
            self.record(tonic::Code::Cancelled);
            self.in_flight.dec();
        }
    }

    fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32)
    }

    /// The response of `call`: recorded now when its status is in its head
    /// (trailers-only), else when its body's trailers are sent.
    pub(crate) fn server_response(
        call: Option<ServerCall>,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let Some(mut call) = call else {
            return response;
        };
        if let Some(code) = status_of(response.headers()) {
            call.record(code);
            return response;
        }
        response.map(|inner| Body::new(Observed { inner, call }))
    }

    /// A response body that records its call's status from its trailers.
    struct Observed {
        inner: Body,
        call: ServerCall,
    }

    impl http_body::Body for Observed {
        type Data = bytes::Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            let polled = Pin::new(&mut self.inner).poll_frame(cx);
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_of) {
                        self.call.record(code);
                    }
                }
                Poll::Ready(Some(Err(status))) => self.call.record(status.code()),
                // Ended without trailers: not a gRPC answer.
                Poll::Ready(None) => self.call.record(tonic::Code::Unknown),
                Poll::Pending => {}
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.inner.size_hint()
        }
    }

    /// One call a client makes, retries included.
    #[derive(Debug)]
    pub(crate) struct ClientCall {
        service: String,
        path: &'static str,
        started: Instant,
        in_flight: Gauge,
        recorded: bool,
    }

    /// A client call to `service` on `path` starts.
    pub(crate) fn client_call(service: &str, path: &'static str) -> ClientCall {
        let in_flight = global().in_flight(false, service);
        in_flight.inc();
        ClientCall {
            service: service.to_string(),
            path,
            started: Instant::now(),
            in_flight,
            recorded: false,
        }
    }

    impl ClientCall {
        /// The call ended with `error` (`None`: OK).
        pub(crate) fn finish(mut self, error: Option<&crate::Error>) {
            self.record(error.map_or(tonic::Code::Ok, crate::Error::grpc_code));
        }

        fn record(&mut self, code: tonic::Code) {
            if self.recorded {
                return;
            }
            self.recorded = true;
            global().client_call(
                &self.service,
                self.path.trim_start_matches('/'),
                code,
                self.started.elapsed(),
            );
        }
    }

    impl Drop for ClientCall {
        fn drop(&mut self) {
            // The caller dropped the call before it ended.
            self.record(tonic::Code::Cancelled);
            self.in_flight.dec();
        }
    }

    /// A call to `service` on `path` is tried again.
    pub(crate) fn client_retry(service: &str, path: &str) {
        global().retry(service, path.trim_start_matches('/'));
    }

    /// A node of `service` was ejected because it `refused` a connection (else it
    /// kept failing).
    pub(crate) fn node_ejected(service: &str, refused: bool) {
        global().ejected(service, if refused { "refused" } else { "failing" });
    }

    /// An ejected node of `service` answered again.
    pub(crate) fn node_restored(service: &str) {
        global().restored(service);
    }

    /// A client looked `service` up: from its cache (`hit`) or the registry.
    pub(crate) fn registry_lookup(service: &str, hit: bool) {
        global().lookup(service, hit);
    }

    /// An event on `topic` was published through broker `system`, or failed to.
    pub(crate) fn published(system: &str, topic: &str, ok: bool) {
        global().published(system, topic, ok);
    }

    /// An event on `topic` was handled, or its handler failed.
    pub(crate) fn delivered(topic: &str, ok: bool) {
        global().delivered(topic, ok);
    }

    /// Broker `system` dropped an event for `reason`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn dropped(system: &'static str, reason: &'static str) {
        global().dropped(system, reason);
    }
}

#[cfg(not(feature = "metrics"))]
mod without_metrics {
    use crate::server::call::Body;

    #[derive(Clone, Debug, Default)]
    pub(crate) struct ServerScope;

    impl ServerScope {
        #[inline]
        pub(crate) fn new<'a>(_: &str, _: impl Iterator<Item = &'a str>) -> Self {
            Self
        }
    }

    #[derive(Debug)]
    pub(crate) struct ServerCall;

    #[inline]
    pub(crate) fn server_call(_: &ServerScope, _: &str) -> Option<ServerCall> {
        None
    }

    #[inline]
    pub(crate) fn server_response(
        _: Option<ServerCall>,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        response
    }

    #[derive(Debug)]
    pub(crate) struct ClientCall;

    #[inline]
    pub(crate) fn client_call(_: &str, _: &'static str) -> ClientCall {
        ClientCall
    }

    impl ClientCall {
        #[inline]
        pub(crate) fn finish(self, _: Option<&crate::Error>) {}
    }

    #[inline]
    pub(crate) fn client_retry(_: &str, _: &str) {}
    #[inline]
    pub(crate) fn node_ejected(_: &str, _: bool) {}
    #[inline]
    pub(crate) fn node_restored(_: &str) {}
    #[inline]
    pub(crate) fn registry_lookup(_: &str, _: bool) {}
    #[inline]
    pub(crate) fn published(_: &str, _: &str, _: bool) {}
    #[inline]
    pub(crate) fn delivered(_: &str, _: bool) {}
    #[inline]
    #[allow(dead_code)]
    pub(crate) fn dropped(_: &'static str, _: &'static str) {}
}
