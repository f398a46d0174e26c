//! Calls by a run-time path with JSON bytes (`Client::call_json` and the streaming
//! siblings) against a typed service over TCP: the same answers as typed calls, bad
//! input refused before anything is sent, errors as go-micro's.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use micro_core::stream::{Receiver, Sender};
use micro_core::{CallOptions, Context, Error, ErrorKind, Request};
use support::{Msg, client, handler, registry, start};

fn svc() -> micro_core::server::Handler {
    handler("Svc", |ctx: Context, m: Msg| async move {
        if m.text == "missing" {
            return Err(Error::not_found("svc", "no such thing"));
        }
        let user = ctx.metadata().get("x-user").unwrap_or_default().to_string();
        Ok(Msg {
            text: format!("{}{user}", m.text.to_uppercase()),
            number: m.number * 2,
        })
    })
    .server_streaming(
        "List",
        "Msg",
        "Msg",
        |_ctx: Context, m: Msg, out: Sender<Msg>| async move {
            for i in 0..m.number {
                out.send(Msg {
                    text: m.text.clone(),
                    number: i,
                })
                .await?;
            }
            Ok::<(), Error>(())
        },
    )
    .client_streaming(
        "Sum",
        "Msg",
        "Msg",
        |_ctx: Context, mut ms: Receiver<Msg>| async move {
            let mut sum = 0;
            while let Some(m) = ms.recv().await {
                sum += m?.number;
            }
            Ok::<_, Error>(Msg {
                text: "sum".into(),
                number: sum,
            })
        },
    )
    .streaming(
        "Chat",
        "Msg",
        "Msg",
        |_ctx: Context, mut ms: Receiver<Msg>, out: Sender<Msg>| async move {
            while let Some(m) = ms.recv().await {
                let m = m?;
                out.send(Msg {
                    text: format!("re: {}", m.text),
                    number: m.number,
                })
                .await?;
            }
            Ok::<(), Error>(())
        },
    )
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn unary_json_by_a_runtime_path() {
    let registry = registry();
    let running = start("svc", &registry, |s| s.handle(svc()).unwrap()).await;
    let client = client(&registry);

    // A path built at run time, metadata and a timeout.
    let path = micro_core::client::endpoint_path("svc", "Svc.Call").unwrap();
    let reply = client
        .call_json(
            "svc",
            &path,
            Request::new(
                Bytes::from_static(br#"{"text":"shippy","number":21}"#),
                CallOptions::new()
                    .metadata("x-user", "-alice")
                    .timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .unwrap();
    let reply = json(&reply);
    assert_eq!(reply["text"], "SHIPPY-alice");
    assert_eq!(reply["number"], 42);

    // The handler's error, as it returned it.
    let err = client
        .call_json(
            "svc",
            "/test.Svc/Call",
            Bytes::from_static(br#"{"text":"missing","number":0}"#),
        )
        .await
        .unwrap_err();
    assert_eq!((err.code, err.id.as_str()), (404, "svc"));

    // Not JSON, or not a path: 400 before anything is sent.
    let err = client
        .call_json("svc", "/test.Svc/Call", Bytes::from_static(b"{\"text\":"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.detail.contains("not valid JSON"), "{err}");
    let err = client
        .call_json("svc", "test.Svc.Call", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");

    // JSON that is not the message: the server's answer, not a panic.
    let err = client
        .call_json("svc", "/test.Svc/Call", Bytes::from_static(b"[1,2]"))
        .await
        .unwrap_err();
    assert!(err.code >= 400, "{err}");

    // A method the service does not have.
    let err = client
        .call_json("svc", "/test.Svc/Nope", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");

    // Many distinct paths: each an answer, none a panic.
    for n in 0..50 {
        let path = format!("/test.Svc/Nope{n}");
        assert!(
            client
                .call_json("svc", &path, Bytes::from_static(b"{}"))
                .await
                .is_err()
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn streams_of_json_by_a_runtime_path() {
    let registry = registry();
    let running = start("svc", &registry, |s| s.handle(svc()).unwrap()).await;
    let client = client(&registry);

    let mut replies = client
        .server_streaming_json(
            "svc",
            "/test.Svc/List",
            Bytes::from_static(br#"{"text":"n","number":3}"#),
        )
        .await
        .unwrap();
    let mut numbers = Vec::new();
    while let Some(reply) = replies.recv().await {
        numbers.push(json(&reply.unwrap())["number"].as_i64().unwrap_or(-1));
    }
    assert_eq!(numbers, [0, 1, 2]);

    let lines = [
        r#"{"text":"","number":1}"#,
        r#"{"text":"","number":2}"#,
        r#"{"text":"","number":39}"#,
    ];
    let sum = client
        .client_streaming_json(
            "svc",
            "/test.Svc/Sum",
            stream::iter(lines.map(|l| Bytes::from_static(l.as_bytes()))),
        )
        .await
        .unwrap();
    assert_eq!(json(&sum)["number"], 42);

    // Every shape is a stream each way on the wire: the bidirectional call reaches
    // the server-streaming method too.
    let mut replies = client
        .streaming_json(
            "svc",
            "/test.Svc/List",
            stream::iter([Bytes::from_static(br#"{"text":"x","number":2}"#)]),
        )
        .await
        .unwrap();
    let mut count = 0;
    while let Some(reply) = replies.recv().await {
        assert_eq!(json(&reply.unwrap())["text"], "x");
        count += 1;
    }
    assert_eq!(count, 2);

    let mut replies = client
        .streaming_json(
            "svc",
            "/test.Svc/Chat",
            stream::iter([
                Bytes::from_static(br#"{"text":"a","number":0}"#),
                Bytes::from_static(br#"{"text":"b","number":0}"#),
            ]),
        )
        .await
        .unwrap();
    let mut texts = Vec::new();
    while let Some(reply) = replies.recv().await {
        texts.push(
            json(&reply.unwrap())["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(texts, ["re: a", "re: b"]);

    let err = client
        .server_streaming_json("svc", "/test.Svc/List", Bytes::from_static(b"nope"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    running.stop().await.unwrap();
}
