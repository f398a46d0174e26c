//! Raw bytes at a service port: plain TCP, and hand-made gRPC requests over HTTP/2
//! (hyper's client), including one whose body is held back.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::ms;

/// The HTTP/2 connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
pub const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
pub const CREATE: &str = "/go.micro.srv.consignment.ShippingService/CreateConsignment";

/// What the server did with raw bytes.
pub async fn raw(address: &str, bytes: &[u8], wait: Duration) -> String {
    let started = Instant::now();
    let mut stream = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return format!("connect failed: {e}"),
    };
    let written = stream.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let outcome = loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + wait),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) => break format!("closed by the server after {}", ms(started.elapsed())),
            Ok(Ok(n)) => {
                if got.len() < 4096 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Ok(Err(e)) => break format!("reset after {} ({})", ms(started.elapsed()), e.kind()),
            Err(_) => break format!("still open after {} (closed by us)", ms(wait)),
        }
    };
    let answer = if got.starts_with(b"HTTP/") {
        let line = String::from_utf8_lossy(&got);
        format!(", answered {:?}", line.lines().next().unwrap_or(""))
    } else if got.is_empty() {
        String::new()
    } else {
        format!(", answered {} bytes", got.len())
    };
    let write = match written {
        Ok(()) => String::new(),
        Err(e) => format!(", write failed ({})", e.kind()),
    };
    format!("{outcome}{answer}{write}")
}

type ReqBody = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A gRPC reply as it came back.
#[derive(Debug, Default)]
pub struct Reply {
    pub http: u16,
    pub grpc_status: Option<String>,
    pub grpc_message: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn describe(&self) -> String {
        format!(
            "HTTP {} grpc-status {} {:?}",
            self.http,
            self.grpc_status.as_deref().unwrap_or("-"),
            super::support::clip(&percent_decode(&self.grpc_message), 100)
        )
    }
}

/// A request body fed through a channel: chunks go out as they are sent, and the
/// body ends when the sender is dropped.
fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ReqBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    (tx, StreamBody::new(stream.boxed()))
}

/// A gRPC request whose body is still being written.
#[derive(Debug)]
pub struct Open {
    pub body: tokio::sync::mpsc::Sender<Bytes>,
    pub reply: tokio::task::JoinHandle<Result<Reply, String>>,
}

/// Opens an HTTP/2 connection to `address` and starts a POST to `path` with
/// `content_type`; its body is whatever is then sent on [`Open::body`].
pub async fn open(address: &str, path: &str, content_type: &str) -> Result<Open, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, ReqBody>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(connection);
    let (tx, body) = channel_body();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(body)
        .map_err(|e| e.to_string())?;
    let reply = tokio::spawn(async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let header = |h: &http::HeaderMap, k: &str| {
            h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let mut reply = Reply {
            http: parts.status.as_u16(),
            grpc_status: header(&parts.headers, "grpc-status"),
            grpc_message: header(&parts.headers, "grpc-message").unwrap_or_default(),
            body: Vec::new(),
        };
        match tokio::time::timeout(Duration::from_secs(10), body.collect()).await {
            Ok(Ok(collected)) => {
                if let Some(trailers) = collected.trailers() {
                    if let Some(s) = header(trailers, "grpc-status") {
                        reply.grpc_status = Some(s);
                    }
                    if let Some(m) = header(trailers, "grpc-message") {
                        reply.grpc_message = m;
                    }
                }
                reply.body = collected.to_bytes().to_vec();
            }
            Ok(Err(e)) => reply.grpc_message = format!("body: {e}"),
            Err(_) => reply.grpc_message = "body not finished within 10 s".into(),
        }
        Ok(reply)
    });
    Ok(Open { body: tx, reply })
}

/// A whole gRPC request: `chunks` as the body, then its reply (within 10 s).
pub async fn grpc(
    address: &str,
    path: &str,
    content_type: &str,
    chunks: Vec<Bytes>,
) -> Result<Reply, String> {
    let open = open(address, path, content_type).await?;
    let sender = open.body;
    // Written beside waiting for the reply: a server may answer (and reset the
    // stream) before taking the whole body.
    let writer = tokio::spawn(async move {
        for chunk in chunks {
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let reply = match tokio::time::timeout(Duration::from_secs(10), open.reply).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => Err(format!("reply task: {e}")),
        Err(_) => Err("no reply within 10 s".into()),
    };
    writer.abort();
    reply
}

/// A gRPC message frame: uncompressed flag, 4-byte big-endian length, the bytes.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
