//! Server and client layers: the token auth layer, and the caller's address reaching
//! the handler with and without layers in between.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use micro_core::layers::{LogLayer, TokenAuthLayer};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Request};
use support::{Msg, PATH, client, handler, msg, registry, start};

#[tokio::test]
async fn a_handler_sees_the_callers_address_with_and_without_layers() {
    let registry = registry();
    let echo_remote = || {
        handler("Where", |ctx: Context, _| async move {
            Ok(msg(ctx.remote().unwrap_or("unknown")))
        })
    };
    let plain = start("plain", &registry, |s| s.handle(echo_remote()).unwrap()).await;
    let layered = start("layered", &registry, |s| {
        s.layer(LogLayer).handle(echo_remote()).unwrap()
    })
    .await;
    let client = client(&registry);
    for name in ["plain", "layered"] {
        let reply: Msg = client
            .call(
                name,
                "/test.Where/Call",
                Request::new(msg(""), CallOptions::new()),
            )
            .await
            .unwrap();
        // The client's end of the connection: loopback, an ephemeral port.
        let address: std::net::SocketAddr = reply
            .text
            .parse()
            .unwrap_or_else(|e| panic!("{name}: remote {:?} is not an address: {e}", reply.text));
        assert!(address.ip().is_loopback(), "{name}: {address}");
        assert_ne!(address.port(), 0, "{name}");
    }
    plain.stop().await.unwrap();
    layered.stop().await.unwrap();
}

#[tokio::test]
async fn the_auth_layer_admits_only_callers_with_a_token() {
    let registry = registry();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let svc = start("secure", &registry, move |s| {
        s.handle(handler("Svc", move |_, m: Msg| {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(m)
            }
        }))
        .unwrap()
        .layer(TokenAuthLayer::new(["s3cret"]))
        .layer(LogLayer)
    })
    .await;
    let anonymous = client(&registry);
    let err = anonymous
        .call::<_, Msg>("secure", PATH, Request::new(msg("hi"), CallOptions::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code, 401, "{err}");
    let wrong = CallOptions::new().metadata("authorization", "Bearer nope");
    assert_eq!(
        anonymous
            .call::<_, Msg>("secure", PATH, Request::new(msg("hi"), wrong))
            .await
            .unwrap_err()
            .code,
        401
    );
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    // A client layer that adds the token to every call.
    let authed = Client::builder(Arc::clone(&registry), Arc::new(TcpTransport::default()))
        .layer(tower::util::MapRequestLayer::new(
            |mut request: http::Request<tonic::body::Body>| {
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("Bearer s3cret"),
                );
                request
            },
        ))
        .build();
    let reply: Msg = authed
        .call("secure", PATH, Request::new(msg("hi"), CallOptions::new()))
        .await
        .unwrap();
    assert_eq!(reply.text, "hi");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}
