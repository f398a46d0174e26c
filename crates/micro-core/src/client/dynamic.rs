//! Calls whose path and messages are known only at run time: JSON bytes in, JSON bytes
//! out (`application/grpc+json`), as a command-line tool or an HTTP gateway makes them.
//!
//! The bodies are checked to be JSON on the way out (a bad request body is a 400
//! before anything is sent) and on the way in (a reply that is not JSON is a 500),
//! never parsed into types. Paths are parsed once per call; nothing is kept per
//! distinct path but the metrics' handles, of which there are at most
//! [`MAX_METRIC_PATHS`] (later paths share one label, `_OTHER`, as unrouted paths do on the server).

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use micro_transport::{Codec, CodecError};

use super::call::{Requests, single};
use super::{Client, read, write};
use crate::stream::Receiver;
use crate::{Error, IntoRequest, IntoStreamingRequest, Request};

/// The most distinct paths of run-time calls that get metrics of their own; calls on
/// further paths are counted under `_OTHER` (the server's label for unrouted paths), so that a gateway called
/// on arbitrary paths keeps its memory and its metrics bounded.
pub const MAX_METRIC_PATHS: usize = 1024;

/// The longest path a run-time call accepts, in bytes.
const MAX_PATH_LEN: usize = 1024;

/// Who a client-side rejection of a run-time call comes from.
const ID: &str = "go.micro.client";

/// The metrics label of the paths past [`MAX_METRIC_PATHS`].
const OTHER: &str = "/_OTHER";

/// The gRPC path of a go-micro endpoint name, by go-micro's gRPC client's rule
/// (`methodToGRPC`): `Service.Method` of the service registered as `service` is
/// `/<service>.<Service>/<Method>`. A `path` that already starts with `/` is returned as
/// it is. micro's servers route on `Service/Method` whatever the package before it, so
/// the result reaches a micro service whatever its proto package is; a go-micro or
/// plain gRPC server needs the registry name to equal the proto package (as in the
/// shippy example: `go.micro.srv.vessel`).
///
/// Fails with 400 when `endpoint` is neither a path nor `Service.Method`.
///
/// ```
/// use micro_core::client::endpoint_path;
///
/// assert_eq!(
///     endpoint_path("go.micro.srv.vessel", "VesselService.FindAvailable")?,
///     "/go.micro.srv.vessel.VesselService/FindAvailable"
/// );
/// assert_eq!(endpoint_path("any", "/greeter.Greeter/Hello")?, "/greeter.Greeter/Hello");
/// assert_eq!(endpoint_path("any", "Hello").unwrap_err().code, 400);
/// # Ok::<(), micro_core::Error>(())
/// ```
pub fn endpoint_path(service: &str, endpoint: &str) -> Result<String, Error> {
    if endpoint.starts_with('/') {
        grpc_path(endpoint)?;
        return Ok(endpoint.to_string());
    }
    let path = match endpoint.split_once('.') {
        Some((svc, method)) if !svc.is_empty() && !method.is_empty() && !method.contains('.') => {
            if service.is_empty() {
                format!("/{svc}/{method}")
            } else {
                format!("/{service}.{svc}/{method}")
            }
        }
        _ => {
            return Err(Error::bad_request(
                ID,
                format!(
                    "endpoint {endpoint:?}: expected Service.Method (e.g. Greeter.Hello) or a gRPC path (/package.Service/Method)"
                ),
            ));
        }
    };
    grpc_path(&path)?;
    Ok(path)
}

/// `path` checked to be a gRPC path, `/package.Service/Method`: else a 400.
fn grpc_path(path: &str) -> Result<PathAndQuery, Error> {
    let bad = |why: &str| Error::bad_request(ID, format!("path {path:?}: {why}"));
    if path.len() > MAX_PATH_LEN {
        return Err(bad("too long"));
    }
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Err(bad("expected /package.Service/Method"));
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    };
    if !name_ok(service) || !name_ok(method) || method.contains('.') {
        return Err(bad("expected /package.Service/Method"));
    }
    PathAndQuery::try_from(path).map_err(|e| bad(&e.to_string()))
}

/// `body` checked to be one JSON value: else a 400 saying where it is wrong.
fn check_request(body: &[u8]) -> Result<(), Error> {
    is_json(body).map_err(|e| Error::bad_request(ID, format!("request is not valid JSON: {e}")))
}

fn is_json(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map(|_| ())
}

/// The `&'static str` the metrics know `path` by: its own, for the first
/// [`MAX_METRIC_PATHS`] distinct paths (kept for the life of the process, as the
/// metrics' handles are), else [`OTHER`].
fn metric_path(path: &str) -> &'static str {
    static PATHS: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let paths = PATHS.get_or_init(Default::default);
    if let Some(known) = read(paths).get(path) {
        return known;
    }
    let mut paths = write(paths);
    if let Some(known) = paths.get(path) {
        return known;
    }
    if paths.len() >= MAX_METRIC_PATHS {
        return OTHER;
    }
    // Bounded by MAX_METRIC_PATHS: at most that many short strings, once each.
    let kept: &'static str = Box::leak(path.to_string().into_boxed_str());
    paths.insert(kept);
    kept
}

/// JSON bytes as they are: checked to be JSON both ways, never parsed into types.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawJsonCodec;

impl Codec<Bytes> for RawJsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, message: &Bytes, dst: &mut impl BufMut) -> Result<(), CodecError> {
        is_json(message).map_err(|e| CodecError::Encode {
            codec: "json",
            reason: format!("not valid JSON: {e}"),
        })?;
        dst.put_slice(message);
        Ok(())
    }

    fn decode(&self, src: &mut impl Buf) -> Result<Bytes, CodecError> {
        let body = src.copy_to_bytes(src.remaining());
        // An empty message is protobuf's empty message: `{}` in JSON.
        if body.is_empty() {
            return Ok(Bytes::from_static(b"{}"));
        }
        is_json(&body).map_err(|e| CodecError::Decode {
            codec: "json",
            reason: format!("the reply is not valid JSON: {e}"),
        })?;
        Ok(body)
    }
}

impl Client {
    /// Calls a unary method known only at run time with JSON (`application/grpc+json`):
    /// `path` is the gRPC path, `/package.Service/Method` (see [`endpoint_path`] for
    /// go-micro's `Service.Method`); `request` the JSON request, bare or in a
    /// [`Request`] with options. Returns the JSON reply as the server wrote it.
    ///
    /// Everything else is as [`Client::call`]: node choice, deadline, retries, spans
    /// and metrics. The options' content type is ignored (always JSON). A path that
    /// is not a gRPC path, or a request that is not JSON, is a 400 before anything is
    /// sent; a reply that is not JSON is a 500.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use micro_core::{CallOptions, Client, Request};
    ///
    /// let client = Client::from_env()?;
    /// let reply = client
    ///     .call_json(
    ///         "go.micro.srv.vessel",
    ///         "/go.micro.srv.vessel.VesselService/FindAvailable",
    ///         Request::new(
    ///             bytes::Bytes::from_static(br#"{"capacity": 500, "max_weight": 200000}"#),
    ///             CallOptions::new().timeout(Duration::from_secs(5)),
    ///         ),
    ///     )
    ///     .await?;
    /// println!("{}", String::from_utf8_lossy(&reply));
    /// # Ok(()) }
    /// ```
    pub async fn call_json(
        &self,
        service: &str,
        path: &str,
        request: impl IntoRequest<Bytes>,
    ) -> Result<Bytes, Error> {
        let Request { message, options } = request.into_request();
        let path = grpc_path(path)?;
        check_request(&message)?;
        let observed = crate::observe::client_call(service, metric_path(path.path()));
        let result = self
            .unary::<RawJsonCodec, Bytes, Bytes>(service, &path, message, options)
            .await;
        observed.finish(result.as_ref().err());
        result
    }

    /// Calls a server-streaming method known only at run time: one JSON request, a
    /// stream of JSON replies. As [`Client::server_streaming`] otherwise; the request
    /// is checked as in [`Client::call_json`].
    pub async fn server_streaming_json(
        &self,
        service: &str,
        path: &str,
        request: impl IntoRequest<Bytes>,
    ) -> Result<Receiver<Bytes>, Error> {
        let Request { message, options } = request.into_request();
        let path = grpc_path(path)?;
        check_request(&message)?;
        let requests = Requests::<_, futures_util::stream::Empty<Bytes>>::One(message);
        let observed = crate::observe::client_call(service, metric_path(path.path()));
        let result = self
            .stream::<RawJsonCodec, Bytes, Bytes, _>(service, &path, requests, options)
            .await;
        observed.stream(result)
    }

    /// Calls a client-streaming method known only at run time: a stream of JSON
    /// requests, one JSON reply. As [`Client::client_streaming`] otherwise. A request
    /// of the stream that is not JSON ends the call with an error; check them before
    /// sending for a clearer one.
    pub async fn client_streaming_json(
        &self,
        service: &str,
        path: &str,
        requests: impl IntoStreamingRequest<Message = Bytes>,
    ) -> Result<Bytes, Error> {
        let Request { message, options } = requests.into_streaming_request();
        let path = grpc_path(path)?;
        let observed = crate::observe::client_call(service, metric_path(path.path()));
        let receiver = self
            .stream::<RawJsonCodec, Bytes, Bytes, _>(
                service,
                &path,
                Requests::Many(message),
                options,
            )
            .await;
        single(observed.stream(receiver)?).await
    }

    /// Calls a bidirectional streaming method known only at run time: JSON requests
    /// go out while JSON replies come in. As [`Client::streaming`] otherwise.
    ///
    /// On the wire every streaming shape is a stream each way, so this also calls a
    /// server-streaming method (send one request) or a client-streaming one (expect
    /// one reply): what a tool that does not know the shape can use.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use micro_core::Client;
    /// use micro_core::futures::stream;
    ///
    /// let client = Client::from_env()?;
    /// let lines = vec![bytes::Bytes::from_static(b"{\"text\":\"a\"}")];
    /// let mut replies = client
    ///     .streaming_json("demo", "/demo.Echo/Chat", stream::iter(lines))
    ///     .await?;
    /// while let Some(reply) = replies.recv().await {
    ///     println!("{}", String::from_utf8_lossy(&reply?));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn streaming_json(
        &self,
        service: &str,
        path: &str,
        requests: impl IntoStreamingRequest<Message = Bytes>,
    ) -> Result<Receiver<Bytes>, Error> {
        let Request { message, options } = requests.into_streaming_request();
        let path = grpc_path(path)?;
        let observed = crate::observe::client_call(service, metric_path(path.path()));
        let result = self
            .stream::<RawJsonCodec, Bytes, Bytes, _>(
                service,
                &path,
                Requests::Many(message),
                options,
            )
            .await;
        observed.stream(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(grpc_path("/a.B/C").is_ok());
        for bad in [
            "",
            "/",
            "a.B/C",
            "/a.B/",
            "//C",
            "/a.B/C/D",
            "/a B/C",
            "/a.B/C?x=1",
            "/a.B/c.d",
        ] {
            assert_eq!(grpc_path(bad).err().map(|e| e.code), Some(400), "{bad:?}");
        }
        assert!(grpc_path(&format!("/{}/M", "a".repeat(2000))).is_err());
    }

    #[test]
    fn bodies_are_checked_and_empty_replies_are_empty_objects() {
        assert!(check_request(br#"{"a":1}"#).is_ok());
        let err = check_request(b"{\"a\":")
            .err()
            .map(|e| e.detail)
            .unwrap_or_default();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(check_request(b"{} x").is_err());
        let mut dst = Vec::new();
        assert!(
            RawJsonCodec
                .encode(&Bytes::from_static(b"nope"), &mut dst)
                .is_err()
        );
        let empty: Bytes = RawJsonCodec.decode(&mut &b""[..]).unwrap_or_default();
        assert_eq!(&empty[..], b"{}");
        assert!(RawJsonCodec.decode(&mut &b"{"[..]).is_err());
    }

    #[test]
    fn metric_paths_are_bounded() {
        let first = metric_path("/x.Y/Z");
        assert_eq!(first, "/x.Y/Z");
        assert!(std::ptr::eq(first, metric_path("/x.Y/Z")));
        for n in 0..MAX_METRIC_PATHS + 5 {
            let _ = metric_path(&format!("/bound.S/M{n}"));
        }
        assert_eq!(metric_path("/another.S/Late"), OTHER);
    }
}
