//! Codecs: a JSON call and a protobuf call reach the same handler and get the same
//! answer; a message without a JSON form is a clear error with JSON, on both sides.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use micro_core::{CallOptions, Request};
use support::{Msg, PATH, client, handler, registry, start};

#[tokio::test]
async fn json_and_protobuf_reach_the_same_handler() {
    let registry = registry();
    let svc = start("svc", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move {
            Ok(Msg {
                text: m.text.to_uppercase(),
                number: m.number * 2,
            })
        }))
        .unwrap()
    })
    .await;
    let client = client(&registry);
    let request = Msg {
        text: "shippy".into(),
        number: 21,
    };
    let proto: Msg = client
        .call(
            "svc",
            PATH,
            Request::new(request.clone(), CallOptions::new()),
        )
        .await
        .unwrap();
    let json: Msg = client
        .call(
            "svc",
            PATH,
            Request::new(request, CallOptions::new().json()),
        )
        .await
        .unwrap();
    assert_eq!(proto, json);
    assert_eq!((json.text.as_str(), json.number), ("SHIPPY", 42));
    svc.stop().await.unwrap();
}

/// The same fields as [`Msg`], without a JSON form.
#[derive(Clone, PartialEq, prost::Message)]
struct Raw {
    #[prost(string, tag = "1")]
    text: String,
}
impl micro_core::Message for Raw {}

#[tokio::test]
async fn a_message_without_a_json_form_is_a_clear_error_with_json() {
    let registry = registry();
    let svc = start("raw", &registry, |s| {
        s.handle(micro_core::server::Handler::new("test", "Svc").unary(
            "Call",
            "Raw",
            "Raw",
            |_, m: Raw| async move { Ok::<_, micro_core::Error>(m) },
        ))
        .unwrap()
    })
    .await;
    let client = client(&registry);
    // Protobuf works.
    let echoed: Raw = client
        .call("raw", PATH, Raw { text: "x".into() })
        .await
        .unwrap();
    assert_eq!(echoed.text, "x");
    // JSON with such a message is refused before anything is sent: 400, saying why.
    let err = client
        .call::<Raw, Raw>(
            "raw",
            PATH,
            Request::new(Raw::default(), CallOptions::new().json()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert!(err.detail.contains("JSON form"), "{err}");
    // A JSON request from a caller whose messages have one: the server says it
    // cannot answer in JSON (UNIMPLEMENTED), and why.
    let err = client
        .call::<Msg, Msg>(
            "raw",
            PATH,
            Request::new(Msg::default(), CallOptions::new().json()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 501, "{err}");
    assert!(err.detail.contains("no JSON form"), "{err}");
    svc.stop().await.unwrap();
}
