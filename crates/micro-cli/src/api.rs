//! `micro api`: an HTTP/JSON gateway that calls services by name.
//!
//! Every request is answered with JSON. The routes:
//!
//! | request | answer |
//! |---|---|
//! | `POST /{service}/{Service}/{Method}` | calls `Service.Method` of the service registered as `{service}` with the JSON body; 200 and the JSON reply |
//! | `POST /{service}/{Service.Method}` | the same: go-micro's `micro api` form, `/{service}/{endpoint}` |
//! | `POST /{service}` with a `Micro-Endpoint: Service.Method` header | the same (go-micro's header; it wins over the path) |
//! | `GET /` | every service: `[{"name", "versions", "nodes", "endpoints"}]`, sorted by name |
//! | `GET /{service}` | the service as the registry holds it: go-micro's registry JSON, one object per version, with nodes and endpoints |
//! | `GET /health` | 200 `{"status":"ok"}` |
//!
//! The body is sent as it came, with `application/grpc+json`, to the gRPC path
//! `/{service}.{Service}/{Method}`, which micro and go-micro gRPC servers route on
//! `Service/Method`. An empty body is sent as `{}`.
//!
//! # Errors
//!
//! Every failure is go-micro's error JSON (`{"id","code","detail","status"}`), with the
//! error's code as the HTTP status, as go-micro's API gateway answers: a handler's 404
//! is a 404, a call that ran out of time is 408, no reachable node is 503. A code that
//! is not an HTTP error code (0, say) becomes 500 with `"error during request: ..."`.
//! The gateway's own errors have the id `go.micro.api`:
//!
//! | status | when |
//! |---|---|
//! | 400 | the body is not JSON; the path is malformed (empty segments, an endpoint that is not `Service.Method`) |
//! | 404 | no such service (the client's `service <name>: not found`, 500 in go-micro, is answered 404 here); no such route |
//! | 405 | a method the route does not take (`Allow` says which) |
//! | 408 | the call did not finish within the timeout ([`ApiOptions::timeout`]) |
//! | 413 | the body is larger than [`ApiOptions::max_body`] |
//! | 503 | [`ApiOptions::max_concurrency`] calls are already in flight |
//!
//! # Running it in a program
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use micro_cli::api::{self, ApiOptions};
//!
//! let client = micro_core::Client::from_env()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! api::serve(listener, client, ApiOptions::default(), micro_core::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use micro_core::registry::Service as Registered;
use micro_core::{CallOptions, Client, Error, Request};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The id of the errors the gateway raises itself (go-micro's API gateway's).
pub const ERROR_ID: &str = "go.micro.api";

/// The largest request body accepted by default: 4 MiB, gRPC's default message limit.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// How long a call may take by default, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many calls may be in flight at once by default.
pub const DEFAULT_MAX_CONCURRENCY: usize = 1024;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish their requests after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of the gateway.
///
/// ```
/// use std::time::Duration;
/// use micro_cli::api::ApiOptions;
///
/// let options = ApiOptions::default()
///     .timeout(Duration::from_secs(2))
///     .max_body(64 * 1024)
///     .max_concurrency(100);
/// assert_eq!(options.timeout, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiOptions {
    /// The largest request body, in bytes; a larger one is refused with 413
    /// (default [`DEFAULT_MAX_BODY`]).
    pub max_body: usize,
    /// How long reading the body and the call may take, retries included; then 408
    /// (default [`DEFAULT_TIMEOUT`]). Registry lookups for `GET` are bounded by it too.
    pub timeout: Duration,
    /// How many requests may be served at once; one more is refused with 503
    /// (default [`DEFAULT_MAX_CONCURRENCY`]).
    pub max_concurrency: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

impl ApiOptions {
    /// Sets [`ApiOptions::max_body`].
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets [`ApiOptions::timeout`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`ApiOptions::max_concurrency`] (at least 1).
    #[must_use]
    pub fn max_concurrency(mut self, requests: usize) -> Self {
        self.max_concurrency = requests.max(1);
        self
    }
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The address to listen on could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listener's own address could not be read.
    #[error("listener: {0}")]
    Listener(std::io::Error),
}

/// `micro api`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ApiArgs {
    /// Where to listen (loopback by default: the gateway has no authentication;
    /// go-micro's listens on every interface).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub address: String,
    /// How long a call may take, retries included (10s, 500ms, 1m); then 408.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::args::parse_duration)]
    pub timeout: Duration,
    /// The largest request body, in bytes; then 413.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// How many calls may be in flight at once; then 503.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
}

impl ApiArgs {
    /// The gateway's options from the flags.
    pub fn options(&self) -> ApiOptions {
        ApiOptions::default()
            .timeout(self.timeout)
            .max_body(self.max_body)
            .max_concurrency(self.max_concurrency)
    }
}

/// `micro api`: serves the gateway on `--address` until Ctrl-C or SIGTERM, after
/// saying on stderr where it listens (the port chosen, for `--address 127.0.0.1:0`).
pub async fn run(args: &ApiArgs, client: Client) -> Result<(), ApiError> {
    let listener = bind(&args.address).await?;
    let local = listener.local_addr().map_err(ApiError::Listener)?;
    eprintln!(
        "micro api: listening on http://{local} (registry {})",
        client.registry().name()
    );
    serve(
        listener,
        client,
        args.options(),
        micro_core::shutdown_signal(),
    )
    .await
}

async fn bind(address: &str) -> Result<TcpListener, ApiError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ApiError::Bind {
            address: address.to_string(),
            source,
        })
}

/// Binds `address` and serves the gateway until `shutdown` completes.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_cli::api::{self, ApiOptions};
///
/// let client = micro_core::Client::from_env()?;
/// api::bind_and_serve("127.0.0.1:8080", client, ApiOptions::default(), micro_core::shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
pub async fn bind_and_serve(
    address: &str,
    client: Client,
    options: ApiOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    serve(bind(address).await?, client, options, shutdown).await
}

/// Serves the gateway on `listener`, calling services with `client`, until
/// `shutdown` completes; then stops accepting, lets requests in flight finish (up to
/// 10 s) and returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_cli::api::{self, ApiOptions};
/// use micro_core::registry::RegistryKind;
/// use micro_core::{Client, Config};
///
/// let mut config = Config::default();
/// config.registry.kind = RegistryKind::Memory;
/// let client = Client::from_config(&config)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// // Stops at once here; a program passes micro_core::shutdown_signal().
/// api::serve(listener, client, ApiOptions::default(), async {}).await?;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    client: Client,
    options: ApiOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    let local = listener.local_addr().map_err(ApiError::Listener)?;
    tracing::info!(address = %local, registry = client.registry().name(), "micro api listening");
    let gateway = Arc::new(Gateway {
        permits: Arc::new(Semaphore::new(options.max_concurrency.max(1))),
        client,
        options,
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let gateway = Arc::clone(&gateway);
                    let service = hyper::service::service_fn(move |request| {
                        let gateway = Arc::clone(&gateway);
                        async move { Ok::<_, Infallible>(gateway.handle(request).await) }
                    });
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("micro api stopping: finishing requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing");
    }
    Ok(())
}

/// The response every route gives: JSON.
type Reply = http::Response<Full<Bytes>>;

struct Gateway {
    client: Client,
    options: ApiOptions,
    permits: Arc<Semaphore>,
}

/// What a request asks for, from its method-free path (and `Micro-Endpoint`).
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    Health,
    Describe(&'a str),
    Call {
        service: &'a str,
        /// `Service` of `Service.Method`.
        handler: &'a str,
        method: &'a str,
    },
}

/// Why a path is not a route: 400 with this text.
#[derive(Debug, PartialEq, Eq)]
struct Malformed(String);

fn route<'a>(path: &'a str, endpoint_header: Option<&'a str>) -> Result<Route<'a>, Malformed> {
    if path.is_empty() || path == "/" {
        return Ok(Route::List);
    }
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Malformed(format!("malformed path {path:?}: empty segment")));
    }
    let service = segments[0];
    check_service(service)?;
    if let Some(endpoint) = endpoint_header {
        let (handler, method) = split_endpoint(endpoint)?;
        return Ok(Route::Call {
            service,
            handler,
            method,
        });
    }
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        [_] => Ok(Route::Describe(service)),
        [_, endpoint] => {
            let (handler, method) = split_endpoint(endpoint)?;
            Ok(Route::Call {
                service,
                handler,
                method,
            })
        }
        [_, handler, method] => {
            check_identifier(handler, "service")?;
            check_identifier(method, "method")?;
            Ok(Route::Call {
                service,
                handler,
                method,
            })
        }
        _ => Err(Malformed(format!(
            "malformed path {path:?}: expected /{{service}}/{{Service}}/{{Method}} or /{{service}}/{{Service.Method}}"
        ))),
    }
}

/// A registry name: printable ASCII without `/`, and no more than 255 bytes.
fn check_service(name: &str) -> Result<(), Malformed> {
    let fine = name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'@'));
    if fine {
        Ok(())
    } else {
        Err(Malformed(format!(
            "malformed service name {name:?}: letters, digits and . - _ : @ only"
        )))
    }
}

/// `Service.Method`, each part an identifier.
fn split_endpoint(endpoint: &str) -> Result<(&str, &str), Malformed> {
    let Some((handler, method)) = endpoint.split_once('.') else {
        return Err(Malformed(format!(
            "malformed endpoint {endpoint:?}: expected Service.Method"
        )));
    };
    check_identifier(handler, "service")?;
    check_identifier(method, "method")?;
    Ok((handler, method))
}

/// A proto identifier: a letter or `_`, then letters, digits and `_`.
fn check_identifier(name: &str, what: &str) -> Result<(), Malformed> {
    let mut bytes = name.bytes();
    let fine = name.len() <= 255
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(Malformed(format!(
            "malformed {what} name {name:?}: expected an identifier"
        )))
    }
}

impl Gateway {
    async fn handle(&self, request: http::Request<Incoming>) -> Reply {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let endpoint = request
            .headers()
            .get("micro-endpoint")
            .map(|v| v.to_str().map(str::to_string));
        let endpoint = match endpoint {
            None => None,
            Some(Ok(endpoint)) => Some(endpoint),
            Some(Err(_)) => {
                return error_reply(Error::bad_request(
                    ERROR_ID,
                    "the Micro-Endpoint header is not ASCII",
                ));
            }
        };
        let route = match route(&path, endpoint.as_deref()) {
            Ok(route) => route,
            Err(Malformed(detail)) => return error_reply(Error::bad_request(ERROR_ID, detail)),
        };
        let reply = match (&route, &method) {
            (Route::Health, &Method::GET | &Method::HEAD) => {
                json_reply(StatusCode::OK, br#"{"status":"ok"}"#.as_slice().into())
            }
            (Route::List, &Method::GET | &Method::HEAD) => self.list().await,
            (Route::Describe(service), &Method::GET | &Method::HEAD) => {
                self.describe(service).await
            }
            (Route::Describe(service), &Method::POST) => error_reply(Error::bad_request(
                ERROR_ID,
                format!(
                    "no endpoint: POST /{service}/{{Service}}/{{Method}}, /{service}/{{Service.Method}}, or a Micro-Endpoint header"
                ),
            )),
            (
                Route::Call {
                    service,
                    handler,
                    method: rpc,
                },
                &Method::POST,
            ) => self.call(service, handler, rpc, request).await,
            (Route::Call { .. }, _) => not_allowed("POST"),
            _ => not_allowed("GET, HEAD"),
        };
        tracing::debug!(%method, %path, status = reply.status().as_u16(), "api request");
        reply
    }

    /// `POST`: reads the body (bounded), checks it is JSON and calls.
    async fn call(
        &self,
        service: &str,
        handler: &str,
        method: &str,
        request: http::Request<Incoming>,
    ) -> Reply {
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return error_reply(Error::service_unavailable(
                ERROR_ID,
                format!(
                    "too many requests in flight (at most {})",
                    self.options.max_concurrency
                ),
            ));
        };
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let body = match self.read_body(request, deadline).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            body
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return error_reply(Error::bad_request(
                ERROR_ID,
                format!("the request body is not JSON: {e}"),
            ));
        }
        let path = format!("/{service}.{handler}/{method}");
        // One budget for reading the body and the call.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let options = CallOptions::new().json().timeout(left);
        // The client keeps to the timeout; this only guards against a call that
        // would not (a little later, so that the client's own 408 wins).
        let guard = deadline + Duration::from_millis(500);
        let result = tokio::time::timeout_at(
            guard,
            self.client
                .call_json(service, &path, Request::new(body, options)),
        )
        .await;
        match result {
            Ok(Ok(reply)) => json_reply(StatusCode::OK, reply),
            Ok(Err(e)) => {
                tracing::debug!(%service, %path, error = %e, "call failed");
                error_reply(not_found_is_404(e, service))
            }
            Err(_) => error_reply(Error::timeout(
                ERROR_ID,
                format!("call timeout: no reply within {:?}", self.options.timeout),
            )),
        }
    }

    /// The body, at most `max_body` bytes, read before `deadline`.
    async fn read_body(
        &self,
        request: http::Request<Incoming>,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, Reply> {
        let limit = self.options.max_body;
        let too_large = || {
            error_reply(Error::new(
                ERROR_ID,
                format!("the request body is larger than {limit} bytes"),
                413,
            ))
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let body = Limited::new(request.into_body(), limit);
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Ok(Err(e)) => Err(error_reply(Error::bad_request(
                ERROR_ID,
                format!("cannot read the request body: {e}"),
            ))),
            Err(_) => Err(error_reply(Error::timeout(
                ERROR_ID,
                "the request body did not arrive in time",
            ))),
        }
    }

    /// `GET /`: every service, one entry per name.
    async fn list(&self) -> Reply {
        let listed =
            tokio::time::timeout(self.options.timeout, self.client.registry().list_services())
                .await;
        let services = match listed {
            Ok(Ok(services)) => services,
            Ok(Err(e)) => return error_reply(Error::from(e)),
            Err(_) => {
                return error_reply(Error::timeout(
                    ERROR_ID,
                    "the registry did not answer in time",
                ));
            }
        };
        match serde_json::to_vec(&summarize(services)) {
            Ok(json) => json_reply(StatusCode::OK, json.into()),
            Err(e) => error_reply(Error::internal_server_error(ERROR_ID, e.to_string())),
        }
    }

    /// `GET /{service}`: the registry's entries for one service.
    async fn describe(&self, service: &str) -> Reply {
        let found = tokio::time::timeout(
            self.options.timeout,
            self.client.registry().get_service(service),
        )
        .await;
        match found {
            Ok(Ok(versions)) if !versions.is_empty() => match serde_json::to_vec(&versions) {
                Ok(json) => json_reply(StatusCode::OK, json.into()),
                Err(e) => error_reply(Error::internal_server_error(ERROR_ID, e.to_string())),
            },
            Ok(Ok(_)) | Ok(Err(micro_core::registry::Error::NotFound(_))) => error_reply(
                Error::not_found(ERROR_ID, format!("service {service}: not found")),
            ),
            Ok(Err(e)) => error_reply(Error::from(e)),
            Err(_) => error_reply(Error::timeout(
                ERROR_ID,
                "the registry did not answer in time",
            )),
        }
    }
}

/// One line of `GET /`.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Summary {
    name: String,
    versions: Vec<String>,
    nodes: usize,
    endpoints: Vec<String>,
}

/// Folds the registry's entries (one per version, or per node) into one per name.
fn summarize(services: Vec<Registered>) -> Vec<Summary> {
    let mut by_name: std::collections::BTreeMap<String, Summary> = Default::default();
    for service in services {
        let summary = by_name
            .entry(service.name.clone())
            .or_insert_with(|| Summary {
                name: service.name.clone(),
                versions: Vec::new(),
                nodes: 0,
                endpoints: Vec::new(),
            });
        if !summary.versions.contains(&service.version) {
            summary.versions.push(service.version.clone());
        }
        summary.nodes += service.nodes.len();
        for endpoint in service.endpoints {
            if !summary.endpoints.contains(&endpoint.name) {
                summary.endpoints.push(endpoint.name);
            }
        }
    }
    by_name
        .into_values()
        .map(|mut s| {
            s.versions.sort();
            s.endpoints.sort();
            s
        })
        .collect()
}

/// The client says an unknown service is `500 service <name>: not found` (go-micro's
/// selector error); a gateway's caller is better told 404.
fn not_found_is_404(err: Error, service: &str) -> Error {
    if err.code == 500 && err.detail == format!("service {service}: not found") {
        Error::not_found(err.id, err.detail)
    } else {
        err
    }
}

/// The HTTP status of an error: its code when that is an HTTP error status (as
/// go-micro's gateway answers), else 500.
fn status_of(err: &Error) -> Option<StatusCode> {
    u16::try_from(err.code)
        .ok()
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
}

fn error_reply(err: Error) -> Reply {
    let (status, err) = match status_of(&err) {
        Some(status) => (status, err),
        None => {
            // go-micro's gateway: a code that is no HTTP error is a failed request.
            let detail = format!("error during request: {}", err.detail);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Error::internal_server_error(ERROR_ID, detail),
            )
        }
    };
    let mut err = err;
    if err.status.is_empty() {
        // Go's http.StatusText, for the codes micro's errors have no phrase for.
        err.status = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
            other => other.canonical_reason().unwrap_or_default(),
        }
        .to_string();
    }
    json_reply(status, Bytes::from(err.to_string()))
}

fn not_allowed(allow: &'static str) -> Reply {
    let mut reply = error_reply(Error::method_not_allowed(
        ERROR_ID,
        format!("method not allowed here; use {allow}"),
    ));
    reply
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    reply
}

fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    let mut reply = http::Response::new(Full::new(body));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(service: &'a str, handler: &'a str, method: &'a str) -> Route<'a> {
        Route::Call {
            service,
            handler,
            method,
        }
    }

    #[test]
    fn routes() {
        let vessel = "go.micro.srv.vessel";
        assert_eq!(route("/", None), Ok(Route::List));
        assert_eq!(route("", None), Ok(Route::List));
        assert_eq!(route("/health", None), Ok(Route::Health));
        assert_eq!(route("/health/", None), Ok(Route::Health));
        assert_eq!(
            route("/go.micro.srv.vessel", None),
            Ok(Route::Describe(vessel))
        );
        assert_eq!(
            route("/go.micro.srv.vessel/VesselService/FindAvailable", None),
            Ok(call(vessel, "VesselService", "FindAvailable"))
        );
        assert_eq!(
            route("/go.micro.srv.vessel/VesselService.FindAvailable", None),
            Ok(call(vessel, "VesselService", "FindAvailable"))
        );
        assert_eq!(
            route("/go.micro.srv.vessel", Some("VesselService.FindAvailable")),
            Ok(call(vessel, "VesselService", "FindAvailable"))
        );
        // The header wins over the path, as in go-micro.
        assert_eq!(
            route(
                "/go.micro.srv.vessel/A/B",
                Some("VesselService.FindAvailable")
            ),
            Ok(call(vessel, "VesselService", "FindAvailable"))
        );
    }

    #[test]
    fn malformed_paths_are_refused() {
        for path in [
            "//",
            "/a//b",
            "/go.micro.srv.vessel/FindAvailable",
            "/go.micro.srv.vessel/.FindAvailable",
            "/go.micro.srv.vessel/VesselService.",
            "/go.micro.srv.vessel/VesselService.Find.Available",
            "/go.micro.srv.vessel/1VesselService/FindAvailable",
            "/go.micro.srv.vessel/Vessel-Service/FindAvailable",
            "/go.micro.srv.vessel/a/b/c",
            "/vessel%20service",
            "/vessel service",
        ] {
            assert!(route(path, None).is_err(), "{path}");
        }
        assert!(route("/go.micro.srv.vessel", Some("FindAvailable")).is_err());
    }

    #[test]
    fn errors_keep_their_http_code() {
        let reply = error_reply(Error::not_found("go.micro.srv.vessel", "no vessel"));
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
        let reply = error_reply(Error::timeout("go.micro.client", "call timeout"));
        assert_eq!(reply.status(), StatusCode::REQUEST_TIMEOUT);
        let reply = error_reply(Error::new("x", "odd", 0));
        assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let reply = error_reply(Error::new("x", "big", 413));
        assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let reply = error_reply(Error::new("x", "odd", 1000));
        assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let unknown = Error::internal_server_error("go.micro.client", "service nope: not found");
        assert_eq!(not_found_is_404(unknown, "nope").code, 404);
        let other = Error::internal_server_error("go.micro.client", "service nope: not found");
        assert_eq!(not_found_is_404(other, "other").code, 500);
    }

    #[test]
    fn listing_folds_versions_and_nodes() {
        use micro_core::registry::{Endpoint, Node};
        let mut a1 = Registered::new("a")
            .version("1")
            .node(Node::new("a-1", "127.0.0.1:1"));
        a1.endpoints.push(Endpoint {
            name: "A.Get".into(),
            ..Endpoint::default()
        });
        let a2 = Registered::new("a")
            .version("2")
            .node(Node::new("a-2", "127.0.0.1:2"));
        let b = Registered::new("b").version("latest");
        let summary = summarize(vec![a2, b, a1]);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].name, "a");
        assert_eq!(summary[0].versions, ["1", "2"]);
        assert_eq!(summary[0].nodes, 2);
        assert_eq!(summary[0].endpoints, ["A.Get"]);
        assert_eq!(summary[1].nodes, 0);
    }
}
