//! `call` and `stream`: methods called by name with JSON.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use bytes::Bytes;
use micro_core::client::endpoint_path;
use micro_core::registry::Registry;
use micro_core::{CallOptions, Client, Error, Request};
use tokio::io::AsyncBufReadExt;

use crate::args::{CallArgs, StreamArgs, Target};
use crate::exit::CliError;
use crate::output::line;

/// Who rejects input before any call.
const ID: &str = "go.micro.client";

/// The largest request read from stdin or a line of a stream (gRPC's default limit).
const MAX_REQUEST: usize = micro_core::codec::DEFAULT_MAX_MESSAGE_SIZE;

/// The options of a call to `target`.
fn options(target: &Target) -> CallOptions {
    let mut options = CallOptions::new().json();
    if let Some(timeout) = target.timeout {
        options = options.timeout(timeout);
    }
    if let Some(node) = &target.node {
        options = options.node(node.clone());
    }
    for (key, value) in &target.metadata {
        options = options.metadata(key, value.clone());
    }
    options
}

/// The client for `target`: the registry's, or one that knows only `--address`.
async fn client_for(
    registry: Arc<dyn Registry>,
    service: &str,
    target: &Target,
) -> Result<Client, CliError> {
    match &target.address {
        Some(address) => crate::env::client_at(service, address).await,
        None => Ok(crate::env::client(registry)),
    }
}

/// `body` checked to be JSON: else go-micro's 400, before any call.
fn check_json(body: &[u8], what: &str) -> Result<(), Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(|_| ())
        .map_err(|e| Error::bad_request(ID, format!("{what} is not valid JSON: {e}")))
}

/// `micro call`: one unary call; prints the JSON reply.
pub async fn call(registry: Arc<dyn Registry>, args: CallArgs) -> Result<(), CliError> {
    let path = endpoint_path(&args.service, &args.endpoint)?;
    let body = match args.request {
        Some(body) => Bytes::from(body),
        // Nothing given and nothing piped: an empty request, as go-micro's `call`.
        None if std::io::stdin().is_terminal() => Bytes::from_static(b"{}"),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .take(MAX_REQUEST as u64 + 1)
                .read_to_end(&mut body)?;
            if body.len() > MAX_REQUEST {
                return Err(Error::bad_request(
                    ID,
                    format!("the request on stdin is over {MAX_REQUEST} bytes"),
                )
                .into());
            }
            Bytes::from(body)
        }
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    check_json(&body, "the request")?;
    let client = client_for(registry, &args.service, &args.target).await?;
    tracing::debug!(service = %args.service, %path, "calling");
    let reply = client
        .call_json(
            &args.service,
            &path,
            Request::new(body, options(&args.target)),
        )
        .await?;
    line(&pretty(&reply))?;
    Ok(())
}

/// A reply as printed: indented JSON (it was checked to be JSON).
fn pretty(reply: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(reply).into_owned())
}

/// `micro stream`: JSON lines from stdin go out as they are read; the replies come
/// back as JSON lines on stdout, as they arrive. Every shape is called as a
/// bidirectional stream, which is what each is on the wire: a server stream gets the
/// one line given, a client stream answers once.
pub async fn stream(registry: Arc<dyn Registry>, args: StreamArgs) -> Result<(), CliError> {
    let path = endpoint_path(&args.service, &args.endpoint)?;
    let client = client_for(registry, &args.service, &args.target).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    // The first bad line, if any: the requests end there, and the command fails
    // with 400 once the replies have been printed.
    let (bad_tx, mut bad_rx) = tokio::sync::oneshot::channel::<Error>();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut number = 0usize;
        loop {
            let text = match lines.next_line().await {
                Ok(Some(text)) => text,
                Ok(None) => break,
                Err(e) => {
                    let _ = bad_tx.send(Error::bad_request(ID, format!("reading stdin: {e}")));
                    break;
                }
            };
            number += 1;
            if text.trim().is_empty() {
                continue;
            }
            if text.len() > MAX_REQUEST {
                let _ = bad_tx.send(Error::bad_request(
                    ID,
                    format!("line {number} is over {MAX_REQUEST} bytes"),
                ));
                break;
            }
            if let Err(e) = check_json(text.as_bytes(), &format!("line {number}")) {
                let _ = bad_tx.send(e);
                break;
            }
            if sender.send(Bytes::from(text)).await.is_err() {
                break;
            }
        }
    });
    let requests = tokio_stream_of(receiver);
    let mut replies = client
        .streaming_json(
            &args.service,
            &path,
            Request::new(requests, options(&args.target)),
        )
        .await?;
    while let Some(reply) = replies.recv().await {
        let reply = reply?;
        line(&String::from_utf8_lossy(&compact(&reply)))?;
    }
    if let Ok(bad) = bad_rx.try_recv() {
        return Err(bad.into());
    }
    Ok(())
}

/// One reply on one line: JSON without newlines.
fn compact(reply: &[u8]) -> Vec<u8> {
    if !reply.contains(&b'\n') {
        return reply.to_vec();
    }
    serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
        .unwrap_or_else(|| reply.to_vec())
}

/// The receiver as a stream of requests.
fn tokio_stream_of(
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl micro_core::futures::Stream<Item = Bytes> + Send + 'static {
    micro_core::futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_is_a_bad_request_naming_where() {
        let err = check_json(b"{\"capacity\": ", "the request").err();
        let err = err.map(|e| (e.code, e.detail)).unwrap_or_default();
        assert_eq!(err.0, 400);
        assert!(err.1.contains("not valid JSON"), "{}", err.1);
        assert!(check_json(b"{}", "x").is_ok());
        assert_eq!(compact(b"{\n \"a\": 1\n}"), b"{\"a\":1}");
    }
}
