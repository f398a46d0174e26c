//! Size limits: a message over the server's limit is refused as resource exhausted
//! (RESOURCE_EXHAUSTED on the wire, whoever the client is) and never reaches the
//! handler; an event too large to deliver is refused when it is published.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use micro_core::broker::{Broker, MemoryBroker, SubscribeOptions};
use micro_core::codec::DEFAULT_MAX_MESSAGE_SIZE;
use micro_core::event::Publisher;
use micro_core::registry::Registry;
use micro_core::server::Handler;
use micro_core::{CallOptions, Context, Error, Request};
use prost::Message as _;
use support::{Msg, PATH, client, handler, msg, registry, start};

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_never_handled() {
    let registry = registry();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let svc = start("small", &registry, move |s| {
        s.max_message_size(1024)
            .handle(handler("Svc", move |_, m: Msg| {
                let count = Arc::clone(&count);
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(m)
                }
            }))
            .unwrap()
    })
    .await;
    let client = client(&registry);
    let ok: Msg = client
        .call(
            "small",
            PATH,
            Request::new(msg(&"x".repeat(500)), CallOptions::new()),
        )
        .await
        .unwrap();
    assert_eq!(ok.text.len(), 500);
    let err = client
        .call::<_, Msg>(
            "small",
            PATH,
            Request::new(msg(&"x".repeat(4096)), CallOptions::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 429, "{err}");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

async fn address(registry: &Arc<dyn Registry>, name: &str) -> String {
    registry.get_service(name).await.unwrap()[0].nodes[0]
        .address
        .clone()
}

/// A client that is not micro's sees RESOURCE_EXHAUSTED (8) in `grpc-status`, for a
/// request over the default 4 MiB.
#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_on_the_wire() {
    let registry = registry();
    let svc = start("wire-request", &registry, |s| {
        s.handle(handler("Svc", |_, m: Msg| async move { Ok(m) }))
            .unwrap()
    })
    .await;
    let channel = raw::channel(&address(&registry, "wire-request").await).await;
    let fits = msg("small").encode_to_vec();
    assert_eq!(
        raw::unary(channel.clone(), PATH, fits.clone())
            .await
            .unwrap(),
        fits
    );
    let over = msg(&"x".repeat(DEFAULT_MAX_MESSAGE_SIZE)).encode_to_vec();
    let status = raw::unary(channel, PATH, over).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    svc.stop().await.unwrap();
}

/// A response over the server's limit is RESOURCE_EXHAUSTED too (tonic puts its
/// OUT_OF_RANGE in the trailers).
#[tokio::test]
async fn an_oversized_response_is_resource_exhausted_on_the_wire() {
    let registry = registry();
    let svc = start("wire-response", &registry, |s| {
        s.max_message_size(1024)
            .handle(handler("Svc", |_, _: Msg| async move {
                Ok(msg(&"y".repeat(4096)))
            }))
            .unwrap()
    })
    .await;
    let channel = raw::channel(&address(&registry, "wire-response").await).await;
    let status = raw::unary(channel, PATH, msg("").encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    svc.stop().await.unwrap();
}

/// In a client stream, the oversized message reaches the handler as a 429 error; a
/// handler that returns it answers RESOURCE_EXHAUSTED.
#[tokio::test]
async fn an_oversized_message_in_a_client_stream_is_resource_exhausted() {
    const STREAM_PATH: &str = "/test.Upload/Send";
    let registry = registry();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let svc = start("wire-stream", &registry, move |s| {
        s.max_message_size(1024)
            .handle(Handler::new("test", "Upload").client_streaming(
                "Send",
                "Msg",
                "Msg",
                move |_ctx: Context, mut messages: micro_core::stream::Receiver<Msg>| {
                    let record = Arc::clone(&record);
                    async move {
                        let mut count = 0;
                        while let Some(message) = messages.recv().await {
                            match message {
                                Ok(_) => count += 1,
                                Err(e) => {
                                    record.lock().unwrap().push(e.code);
                                    return Err(e);
                                }
                            }
                        }
                        Ok(Msg {
                            text: String::new(),
                            number: count,
                        })
                    }
                },
            ))
            .unwrap()
    })
    .await;
    let channel = raw::channel(&address(&registry, "wire-stream").await).await;
    let status = raw::client_streaming(
        channel,
        STREAM_PATH,
        vec![
            msg("ok").encode_to_vec(),
            msg(&"z".repeat(4096)).encode_to_vec(),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(*seen.lock().unwrap(), vec![429]);
    svc.stop().await.unwrap();
}

/// An event too large to be delivered is refused by `publish` (400, naming its size
/// and the limit) and never reaches the broker; one just under the limit goes.
#[tokio::test]
async fn an_event_over_the_limit_is_refused_before_it_is_sent() {
    let broker = Arc::new(MemoryBroker::new());
    broker.connect().await.unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&delivered);
    let _subscriber = broker
        .subscribe(
            "big",
            micro_core::broker::handler(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let publisher = Publisher::<Msg>::new("big", broker.clone());

    // Just under 4 MiB of body: with the topic, headers and envelope, over.
    let text = "x".repeat(DEFAULT_MAX_MESSAGE_SIZE - 64);
    let err: Error = publisher.publish(msg(&text)).await.unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert!(
        err.detail.contains(&DEFAULT_MAX_MESSAGE_SIZE.to_string()),
        "names the limit: {err}"
    );
    assert!(err.detail.contains("too large"), "{err}");

    // Comfortably under: published and delivered.
    let text = "x".repeat(DEFAULT_MAX_MESSAGE_SIZE - 4096);
    publisher.publish(msg(&text)).await.unwrap();

    // The limit is the publisher's.
    let small = Publisher::<Msg>::new("big", broker.clone()).max_message_size(1024);
    assert_eq!(
        small
            .publish(msg(&"x".repeat(2048)))
            .await
            .unwrap_err()
            .code,
        400
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while delivered.load(Ordering::SeqCst) < 1 {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(delivered.load(Ordering::SeqCst), 1);
}
