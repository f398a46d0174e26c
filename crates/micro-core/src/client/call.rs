//! One call: its deadline, the retry loop with backoff for unary calls, one attempt
//! on one node, and the opening of a stream.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use micro_transport::{Codec, TonicCodec};
use tokio::time::Instant;
use tracing::Instrument;

use super::Client;
use super::error::{client_error, is_connection_failure, is_refused_by_go_away, is_unsent};
use super::pool::ContentSubtype;
use crate::stream::Receiver;
use crate::telemetry::{self, TARGET, semconv};
use crate::{CallOptions, Error, grpc_timeout};

/// The client span of one call to `service` at `path`: a child of the options'
/// parent, else of the current span.
fn call_span(options: &CallOptions, service: &str, path: &str) -> tracing::Span {
    let method = path.strip_prefix('/').unwrap_or(path);
    macro_rules! span {
        ($($parent:tt)*) => {
            tracing::info_span!(
                target: TARGET,
                $($parent)*
                "call",
                otel.name = method,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                rpc.system.name = "grpc",
                rpc.method = method,
                rpc.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                micro.service = service,
                micro.retries = tracing::field::Empty,
            )
        };
    }
    match &options.parent {
        Some(parent) => span!(parent: parent,),
        None => span!(),
    }
}

/// The span of one attempt of a call, on `node`.
fn attempt_span(
    call: &tracing::Span,
    service: &str,
    path: &str,
    node: &micro_registry::Node,
    attempt: usize,
) -> tracing::Span {
    let method = path.strip_prefix('/').unwrap_or(path);
    tracing::info_span!(
        target: TARGET,
        parent: call,
        "attempt",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system.name = "grpc",
        rpc.method = method,
        rpc.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        micro.service = service,
        micro.node.id = %node.id,
        micro.attempt = attempt,
        server.address = telemetry::split_host_port(&node.address).0,
        server.port = telemetry::split_host_port(&node.address).1,
    )
}

/// Records how a call or attempt ended on its client span: any code but OK is an
/// error.
fn record_status(span: &tracing::Span, code: tonic::Code) {
    let name = semconv::code_name(code);
    span.record(semconv::STATUS_CODE, name);
    if code != tonic::Code::Ok {
        telemetry::record_error(span, code);
    }
}

/// The request side of a stream: one message, or a stream of them.
pub(super) enum Requests<Req, S> {
    One(Req),
    Many(S),
}

/// Copies the options' metadata into a request's headers, skipping what is not a
/// valid header.
fn add_metadata(options: &CallOptions, metadata: &mut tonic::metadata::MetadataMap) {
    for (key, value) in options.metadata.iter() {
        match (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            (Ok(k), Ok(v)) => {
                metadata.insert(k, v);
            }
            _ => tracing::debug!(key, "skipping metadata that is not a valid header"),
        }
    }
}

/// Names codec `C` in the request unless it is protobuf, tonic's own (so the
/// extension map is not allocated for the common case).
fn name_codec<C: Codec<Req>, Req>(codec: &C, extensions: &mut http::Extensions) {
    let subtype = Codec::<Req>::name(codec);
    if subtype != "proto" {
        extensions.insert(ContentSubtype(subtype));
    }
}

impl Client {
    /// A unary call with codec `C`: retried on other nodes within one deadline, in
    /// a client span.
    pub(super) async fn unary<C, Req, Resp>(
        &self,
        service: &str,
        path: &PathAndQuery,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        let span = call_span(&options, service, path.path());
        let result = self
            .unary_in::<C, Req, Resp>(&span, service, path, request, options)
            .instrument(span.clone())
            .await;
        record_status(
            &span,
            result
                .as_ref()
                .map_or_else(Error::grpc_code, |_| tonic::Code::Ok),
        );
        result
    }

    /// The attempts of a unary call, each in a child span of `span`.
    async fn unary_in<C, Req, Resp>(
        &self,
        span: &tracing::Span,
        service: &str,
        path: &PathAndQuery,
        request: Req,
        options: CallOptions,
    ) -> Result<Resp, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        // Shared by every attempt: a retry re-encodes it, never copies it.
        let request = Arc::new(request);
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        let started = Instant::now();
        let deadline = options
            .deadline_at(Some(timeout), started)
            .unwrap_or(started + timeout);
        let retries = options.retries.unwrap_or(self.inner.retries);
        let timed_out = || {
            Error::timeout(
                "go.micro.client",
                format!("call to {service} {path} timed out after {timeout:?}"),
            )
        };
        self.ensure_pruning().await;
        self.inner.budget.call();
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        // Whether the last failure was a refused connection: the request never left,
        // so another node is tried at once, with no backoff.
        let mut last_refused = false;
        for n in 0..=retries {
            if n > 0 {
                // A call pinned to one node has nowhere else to go; and no backoff is
                // spent waiting on nodes known to be dead.
                if options.node.is_some() || !self.has_candidate(service, &tried) {
                    break;
                }
                if !self.inner.budget.retry() {
                    tracing::debug!(service, "retry budget spent: no retry");
                    break;
                }
                crate::observe::client_retry(service, path.path());
                if !last_refused {
                    let delay = (self.inner.backoff)(u32::try_from(n).unwrap_or(u32::MAX));
                    if Instant::now() + delay >= deadline {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
            // The time left as the request leaves: the first attempt leaves at once
            // (grpc-timeout counts whole milliseconds), a retry after its backoff.
            let now = if n == 0 { started } else { Instant::now() };
            // From memory when cached (no timer, no await); else ask the registry.
            let cached = self.inner.cache.cached(service).filter(|s| !s.is_empty());
            crate::observe::registry_lookup(service, cached.is_some());
            let services = match cached {
                Some(services) => services,
                None => {
                    match tokio::time::timeout_at(deadline, self.inner.cache.lookup(service)).await
                    {
                        Ok(Ok(services)) => services,
                        Ok(Err(e)) => return Err(last_error.unwrap_or_else(|| Error::from(e))),
                        Err(_) => return Err(timed_out()),
                    }
                }
            };
            // The node is borrowed from the cached list: nothing is copied per call.
            let node = match self.choose(service, &services, &tried, &options) {
                Ok(node) => node,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            if n > 0 {
                span.record(semconv::MICRO_RETRIES, n);
            }
            let attempt = attempt_span(span, service, path.path(), node, n + 1);
            let outcome = tokio::time::timeout_at(
                deadline,
                self.attempt::<C, Req, Resp>(
                    &attempt,
                    &node.address,
                    path,
                    Arc::clone(&request),
                    &options,
                    deadline.saturating_duration_since(now),
                )
                .instrument(attempt.clone()),
            )
            .await;
            record_status(
                &attempt,
                match &outcome {
                    Err(_) => tonic::Code::DeadlineExceeded,
                    Ok(Ok(_)) => tonic::Code::Ok,
                    Ok(Err(status)) => status.code(),
                },
            );
            drop(attempt);
            let status = match outcome {
                Err(_) => return Err(timed_out()),
                Ok(Ok(response)) => {
                    self.succeeded(&node.address);
                    return Ok(response);
                }
                // tonic enforces `grpc-timeout` too, and reports it as CANCELLED; past
                // the deadline, whoever noticed first, it is a timeout.
                Ok(Err(_)) if Instant::now() >= deadline => return Err(timed_out()),
                Ok(Err(status)) => status,
            };
            let refused = is_connection_failure(&status);
            // Turned away by GOAWAY, or handed back unsent by a closing connection.
            let turned_away = !refused && (is_refused_by_go_away(&status) || is_unsent(&status));
            tried.push(node.address.clone());
            if refused {
                self.refused(service, node);
            } else if turned_away {
                // The node is leaving and said so; not a failure of the node, and the
                // request never reached a handler: try another.
                tracing::debug!(service, node = %node.id, "request turned away unprocessed (GOAWAY, or its connection closed before it was sent)");
            } else if status.code() == tonic::Code::Unavailable {
                self.failed(service, node);
                // UNAVAILABLE is worth retrying elsewhere, not again on the same node;
                // with nowhere else to go, the caller gets the node's own answer.
                if !self.has_candidate(service, &tried) {
                    return Err(client_error(status));
                }
            } else {
                // The node answered: whatever the answer, it is alive.
                self.succeeded(&node.address);
                return Err(client_error(status));
            }
            tracing::debug!(service, node = %node.id, error = %status.message(), attempt = n, "retryable failure");
            // Neither request left for a handler: the next node is tried at once.
            last_refused = refused || turned_away;
            last_error = Some(Error::service_unavailable(
                "go.micro.client",
                format!(
                    "service {service}: node {} at {} {}: {} (tried {})",
                    node.id,
                    node.address,
                    if refused {
                        "unreachable"
                    } else if turned_away {
                        "going away"
                    } else {
                        "unavailable"
                    },
                    status.message(),
                    tried.join(", ")
                ),
            ));
        }
        Err(last_error.unwrap_or_else(timed_out))
    }

    /// One attempt on one node with codec `C`, carrying `span`'s trace context.
    async fn attempt<C, Req, Resp>(
        &self,
        span: &tracing::Span,
        address: &str,
        path: &PathAndQuery,
        request: Arc<Req>,
        options: &CallOptions,
        time_left: Duration,
    ) -> Result<Resp, tonic::Status>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        let connection = self.connection(address)?;
        let mut request = tonic::Request::new(request);
        add_metadata(options, request.metadata_mut());
        telemetry::inject_metadata(span, request.metadata_mut());
        let codec = C::default();
        name_codec::<C, Req>(&codec, request.extensions_mut());
        let codec: SharedRequestCodec<C, Req, Resp> =
            SharedRequestCodec(codec, std::marker::PhantomData);
        let mut grpc = tonic::client::Grpc::new(connection)
            .max_decoding_message_size(self.inner.max_message_size)
            .max_encoding_message_size(self.inner.max_message_size);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        request.metadata_mut().insert(
            grpc_timeout::metadata_key(),
            grpc_timeout::encode(time_left),
        );
        grpc.unary(request, path.clone(), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Opens a stream to one node with codec `C`: requests out, a receiver of
    /// responses back. Streams are not retried. Its client span lasts until the
    /// stream ends (or its receiver is dropped).
    pub(super) async fn stream<C, Req, Resp, S>(
        &self,
        service: &str,
        path: &PathAndQuery,
        requests: Requests<Req, S>,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
        S: futures_util::Stream<Item = Req> + Send + 'static,
    {
        let span = call_span(&options, service, path.path());
        let result = self
            .stream_in::<C, Req, Resp, S>(&span, service, path, requests, options)
            .instrument(span.clone())
            .await;
        match result {
            Ok(receiver) => Ok(receiver.on_end(move |code| record_status(&span, code))),
            Err(e) => {
                record_status(&span, e.grpc_code());
                Err(e)
            }
        }
    }

    /// Opens a stream, carrying `span`'s trace context.
    async fn stream_in<C, Req, Resp, S>(
        &self,
        span: &tracing::Span,
        service: &str,
        path: &PathAndQuery,
        requests: Requests<Req, S>,
        options: CallOptions,
    ) -> Result<Receiver<Resp>, Error>
    where
        C: Codec<Req> + Codec<Resp> + Default,
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
        S: futures_util::Stream<Item = Req> + Send + 'static,
    {
        let deadline = options.deadline_at(None, Instant::now());
        self.ensure_pruning().await;
        crate::observe::stream_lookup(&self.inner.cache, service);
        let services = self.inner.cache.lookup(service).await?;
        let node = self.choose(service, &services, &[], &options)?;
        let connection = self.connection(&node.address).map_err(client_error)?;
        let mut grpc = tonic::client::Grpc::new(connection)
            .max_decoding_message_size(self.inner.max_message_size)
            .max_encoding_message_size(self.inner.max_message_size);
        let failed = |status: tonic::Status| {
            if is_connection_failure(&status) {
                self.refused(service, node);
                Error::service_unavailable(
                    "go.micro.client",
                    format!(
                        "service {service}: node {} at {} unreachable: {}",
                        node.id,
                        node.address,
                        status.message()
                    ),
                )
            } else {
                client_error(status)
            }
        };
        grpc.ready().await.map_err(|e| {
            failed(tonic::Status::unavailable(format!(
                "connection not ready: {e}"
            )))
        })?;
        let codec = C::default();
        let path = path.clone();
        let prepare = |metadata: &mut tonic::metadata::MetadataMap,
                       extensions: &mut http::Extensions| {
            add_metadata(&options, metadata);
            telemetry::inject_metadata(span, metadata);
            name_codec::<C, Req>(&codec, extensions);
            if let Some(at) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                metadata.insert(grpc_timeout::metadata_key(), grpc_timeout::encode(left));
            }
        };
        let tonic_codec: TonicCodec<C, Req, Resp> = TonicCodec::new(codec.clone());
        let opened = match requests {
            Requests::One(one) => {
                let mut request = tonic::Request::new(one);
                let mut extensions = std::mem::take(request.extensions_mut());
                prepare(request.metadata_mut(), &mut extensions);
                *request.extensions_mut() = extensions;
                open_within(
                    deadline,
                    service,
                    grpc.server_streaming(request, path, tonic_codec),
                )
                .await?
            }
            Requests::Many(stream) => {
                let mut request = tonic::Request::new(stream);
                let mut extensions = std::mem::take(request.extensions_mut());
                prepare(request.metadata_mut(), &mut extensions);
                *request.extensions_mut() = extensions;
                open_within(
                    deadline,
                    service,
                    grpc.streaming(request, path, tonic_codec),
                )
                .await?
            }
        };
        let streaming = opened.map_err(failed)?.into_inner();
        use futures_util::StreamExt;
        Ok(Receiver::new(
            streaming.map(|item| item.map_err(client_error)),
            deadline,
        ))
    }
}

/// Waits for a stream to open, within its deadline.
async fn open_within<T>(
    deadline: Option<Instant>,
    service: &str,
    open: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, open).await.map_err(|_| {
            Error::timeout("go.micro.client", format!("stream to {service} timed out"))
        }),
        None => Ok(open.await),
    }
}

/// The one response of a client-streaming call, once the stream's end (its
/// trailers) has said the call ended well.
pub(super) async fn single<Resp>(mut receiver: Receiver<Resp>) -> Result<Resp, Error> {
    let response = match receiver.recv().await {
        Some(result) => result?,
        None => {
            return Err(Error::internal_server_error(
                "go.micro.client",
                "the stream ended without a response",
            ));
        }
    };
    match receiver.recv().await {
        None => Ok(response),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) => Err(Error::internal_server_error(
            "go.micro.client",
            "more than one response to a client-streaming call",
        )),
    }
}

/// tonic's codec for a call whose request is shared between attempts: encodes
/// `Arc<Req>` by reference with the micro codec `C`, decodes `Resp` with it.
struct SharedRequestCodec<C, Req, Resp>(C, std::marker::PhantomData<fn(Req) -> Resp>);

/// The encoding half of [`SharedRequestCodec`].
struct SharedEncoder<C, Req>(C, std::marker::PhantomData<fn(Req)>);

impl<C, Req> tonic::codec::Encoder for SharedEncoder<C, Req>
where
    C: Codec<Req>,
    Req: Send + Sync + 'static,
{
    type Item = Arc<Req>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Arc<Req>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        self.0.encode(&*item, dst).map_err(tonic::Status::from)
    }
}

impl<C, Req, Resp> tonic::codec::Codec for SharedRequestCodec<C, Req, Resp>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + Sync + 'static,
    Resp: Send + 'static,
{
    type Encode = Arc<Req>;
    type Decode = Resp;
    type Encoder = SharedEncoder<C, Req>;
    type Decoder = micro_transport::CodecDecoder<C, Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(self.0.clone(), std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut TonicCodec::<C, Resp, Resp>::new(self.0.clone()))
    }
}
