//! The points where micro records metrics: one-line calls from the server, the client
//! and the broker. Without the feature `metrics` every one is an empty inline
//! function, so the code that calls them needs no `cfg`.

#[cfg(feature = "metrics")]
pub(crate) use with_metrics::*;
#[cfg(not(feature = "metrics"))]
pub(crate) use without_metrics::*;

#[cfg(feature = "metrics")]
mod with_metrics {
    use std::collections::HashMap;
    use std::pin::Pin;
    use std::sync::{Arc, OnceLock, RwLock};
    use std::task::{Context as TaskContext, Poll};
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use tokio::time::Instant;

    use crate::metrics::{OTHER_METHOD, global};
    use crate::server::call::Body;

    /// The paths that do not count as calls: health checks and reflection.
    const UNCOUNTED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

    /// What a server's calls are labelled with: the registry name it serves and the
    /// paths it has routes for.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct ServerScope(Option<Arc<Scope>>);

    /// A server's handles, made once: the hot path (a routed call answered OK)
    /// allocates nothing and takes no family lock.
    #[derive(Debug)]
    struct Scope {
        service: String,
        in_flight: Gauge,
        /// By path (`/package.Service/Method`).
        methods: HashMap<String, Arc<Method>>,
        /// Paths with no route.
        other: Arc<Method>,
    }

    /// One method's label and the handle of its OK series.
    #[derive(Debug)]
    struct Method {
        name: String,
        ok: Histogram,
    }

    impl Method {
        fn new(server: bool, service: &str, name: &str) -> Arc<Self> {
            Arc::new(Self {
                name: name.to_string(),
                ok: global().duration(server, service, name, tonic::Code::Ok),
            })
        }

        /// Records a call of `service` that took `took` and ended with `code`.
        fn record(&self, server: bool, service: &str, code: tonic::Code, took: Duration) {
            let seconds = took.as_secs_f64();
            if code == tonic::Code::Ok {
                self.ok.observe(seconds);
            } else {
                global()
                    .duration(server, service, &self.name, code)
                    .observe(seconds);
            }
        }
    }

    impl ServerScope {
        /// The scope of a server registered as `service` with routes `paths`
        /// (`/package.Service/Method`; other forms are skipped).
        pub(crate) fn new<'a>(service: &str, paths: impl Iterator<Item = &'a str>) -> Self {
            let methods = paths
                .filter_map(|path| {
                    let name = path.strip_prefix('/')?;
                    Some((path.to_string(), Method::new(true, service, name)))
                })
                .collect();
            Self(Some(Arc::new(Scope {
                service: service.to_string(),
                in_flight: global().in_flight(true, service),
                methods,
                other: Arc::new(Method {
                    name: OTHER_METHOD.to_string(),
                    // Not made up front: a server that is never called on an unknown
                    // path lists no `_OTHER` series.
                    ok: Histogram::new([]),
                }),
            })))
        }
    }

    /// One call a server handles, from its request to its last byte.
    #[derive(Debug)]
    pub(crate) struct ServerCall {
        scope: Arc<Scope>,
        method: Arc<Method>,
        started: Instant,
        recorded: bool,
    }

    /// A server call starts on `path`; `None` when not counted.
    pub(crate) fn server_call(scope: &ServerScope, path: &str) -> Option<ServerCall> {
        let scope = scope.0.as_ref()?;
        if UNCOUNTED.iter().any(|prefix| path.starts_with(prefix)) {
            return None;
        }
        let method = scope
            .methods
            .get(path)
            .map_or_else(|| Arc::clone(&scope.other), Arc::clone);
        scope.in_flight.inc();
        Some(ServerCall {
            scope: Arc::clone(scope),
            method,
            started: Instant::now(),
            recorded: false,
        })
    }

    impl ServerCall {
        fn record(&mut self, code: tonic::Code) {
            if self.recorded {
                return;
            }
            self.recorded = true;
            let took = self.started.elapsed();
            if Arc::ptr_eq(&self.method, &self.scope.other) {
                // Unknown paths: every status through the family, OK included.
                global().server_call(&self.scope.service, OTHER_METHOD, code, took);
            } else {
                self.method.record(true, &self.scope.service, code, took);
            }
        }
    }

    impl Drop for ServerCall {
        fn drop(&mut self) {
            // Dropped before its status was sent: the caller went away.
            self.record(tonic::Code::Cancelled);
            self.scope.in_flight.dec();
        }
    }

    fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
        headers
            .get(crate::server::call::GRPC_STATUS)
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

    /// A client's handles for calls to one service: made on its first call, then
    /// found without allocating.
    #[derive(Debug)]
    struct Callee {
        service: String,
        in_flight: Gauge,
        hit: Counter,
        miss: Counter,
        /// By path (`&'static`: the generated clients' constants).
        methods: RwLock<HashMap<&'static str, Arc<Method>>>,
    }

    /// Every service the process's clients called.
    static CALLEES: OnceLock<RwLock<HashMap<String, Arc<Callee>>>> = OnceLock::new();

    fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
        lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
        lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The most services a client's metrics name; the rest are counted as `_OTHER`.
    const MAX_CALLEES: usize = 1024;

    fn callee(service: &str) -> Arc<Callee> {
        let callees = CALLEES.get_or_init(Default::default);
        if let Some(callee) = read(callees).get(service) {
            return Arc::clone(callee);
        }
        let metrics = global();
        let mut callees = write(callees);
        // Names come from callers (a gateway passes on whatever it is asked for):
        // past MAX_CALLEES, new ones share one label rather than grow the table.
        let service = if callees.len() >= MAX_CALLEES && !callees.contains_key(service) {
            OTHER_METHOD
        } else {
            service
        };
        Arc::clone(callees.entry(service.to_string()).or_insert_with(|| {
            Arc::new(Callee {
                service: service.to_string(),
                in_flight: metrics.in_flight(false, service),
                hit: metrics.lookup_counter(service, true),
                miss: metrics.lookup_counter(service, false),
                methods: RwLock::default(),
            })
        }))
    }

    impl Callee {
        fn method(&self, path: &'static str) -> Arc<Method> {
            if let Some(method) = read(&self.methods).get(path) {
                return Arc::clone(method);
            }
            Arc::clone(
                write(&self.methods).entry(path).or_insert_with(|| {
                    Method::new(false, &self.service, path.trim_start_matches('/'))
                }),
            )
        }
    }

    /// One call a client makes, retries included.
    #[derive(Debug)]
    pub(crate) struct ClientCall {
        callee: Arc<Callee>,
        method: Arc<Method>,
        started: Instant,
        recorded: bool,
    }

    /// A client call to `service` on `path` starts.
    pub(crate) fn client_call(service: &str, path: &'static str) -> ClientCall {
        let callee = callee(service);
        let method = callee.method(path);
        callee.in_flight.inc();
        ClientCall {
            callee,
            method,
            started: Instant::now(),
            recorded: false,
        }
    }

    impl ClientCall {
        /// The call ended with `error` (`None`: OK).
        pub(crate) fn finish(mut self, error: Option<&crate::Error>) {
            self.record(error.map_or(tonic::Code::Ok, crate::Error::grpc_code));
        }

        /// A stream call: it ends with its stream (or with its error, if it never
        /// opened), so its duration covers the whole stream.
        pub(crate) fn stream<T>(
            self,
            opened: Result<crate::stream::Receiver<T>, crate::Error>,
        ) -> Result<crate::stream::Receiver<T>, crate::Error> {
            match opened {
                Ok(receiver) => {
                    let mut call = self;
                    Ok(receiver.on_end(move |code| call.record(code)))
                }
                Err(e) => {
                    self.finish(Some(&e));
                    Err(e)
                }
            }
        }

        fn record(&mut self, code: tonic::Code) {
            if self.recorded {
                return;
            }
            self.recorded = true;
            self.method
                .record(false, &self.callee.service, code, self.started.elapsed());
        }
    }

    impl Drop for ClientCall {
        fn drop(&mut self) {
            // The caller dropped the call before it ended.
            self.record(tonic::Code::Cancelled);
            self.callee.in_flight.dec();
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
        let callee = callee(service);
        if hit { &callee.hit } else { &callee.miss }.inc();
    }

    /// A stream to `service` looks it up in `cache`: a hit if it is cached.
    pub(crate) fn stream_lookup(cache: &micro_registry::CachedRegistry, service: &str) {
        registry_lookup(service, cache.cached(service).is_some());
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

        #[inline]
        pub(crate) fn stream<T>(
            self,
            opened: Result<crate::stream::Receiver<T>, crate::Error>,
        ) -> Result<crate::stream::Receiver<T>, crate::Error> {
            opened
        }
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
    pub(crate) fn stream_lookup(_: &micro_registry::CachedRegistry, _: &str) {}
    #[inline]
    pub(crate) fn published(_: &str, _: &str, _: bool) {}
    #[inline]
    pub(crate) fn delivered(_: &str, _: bool) {}
    #[inline]
    pub(crate) fn dropped(_: &'static str, _: &'static str) {}
}
