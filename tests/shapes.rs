//! Generated code for every RPC shape (micro-codegen's sample proto,
//! `crates/micro-codegen/tests/proto/micro/test/v1/shapes.proto`), served and called
//! over real sockets: unary, server streaming, client streaming,
//! bidirectional; an import from another package; well-known types; JSON.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod protos {
    // The generated code allows what it leaves unused and undocumented.
    micro_core::include_protos!();
}

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::stream::{Receiver, Sender};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Error, Request, Service};
use protos::micro::test::common::Page;
use protos::micro::test::v1::{
    Note, PingService, PingServiceHandler, ShapesHandler, ShapesService, Summary, note,
    ping_service_handler, shapes_handler,
};

struct Shapes;

#[micro_core::async_trait]
impl ShapesHandler for Shapes {
    async fn echo(&self, _ctx: Context, request: Note) -> Result<Note, Error> {
        Ok(Note {
            text: request.text.to_uppercase(),
            ..request
        })
    }

    async fn list(&self, _ctx: Context, page: Page, responses: Sender<Note>) -> Result<(), Error> {
        for i in 0..page.size {
            responses
                .send(Note {
                    text: format!("{}-{i}", page.token),
                    ..Note::default()
                })
                .await?;
        }
        if page.token == "fail" {
            return Err(Error::bad_request("shapes", "asked to fail"));
        }
        Ok(())
    }

    async fn collect(&self, _ctx: Context, mut requests: Receiver<Note>) -> Result<Summary, Error> {
        let mut texts = Vec::new();
        while let Some(note) = requests.recv().await {
            texts.push(note?.text);
        }
        Ok(Summary {
            count: i32::try_from(texts.len()).unwrap_or(i32::MAX),
            joined: texts.join(","),
        })
    }

    async fn chat(
        &self,
        _ctx: Context,
        mut requests: Receiver<Note>,
        responses: Sender<Note>,
    ) -> Result<(), Error> {
        while let Some(note) = requests.recv().await {
            let note = note?;
            responses
                .send(Note {
                    text: format!("re: {}", note.text),
                    ..Note::default()
                })
                .await?;
        }
        Ok(())
    }
}

struct Ping;

#[micro_core::async_trait]
impl PingServiceHandler for Ping {
    async fn ping(
        &self,
        _ctx: Context,
        request: micro_core::pbjson_types::Empty,
    ) -> Result<micro_core::pbjson_types::Empty, Error> {
        Ok(request)
    }
}

async fn serve() -> (
    Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micro_core::ServiceError>>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let service = Service::new("micro.test")
        .unwrap()
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry));
    let service = service.handle(shapes_handler(Shapes)).unwrap();
    let service = service.handle(ping_service_handler(Ping)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    while registry.get_service("micro.test").await.is_err() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let endpoints: Vec<String> = registry.get_service("micro.test").await.unwrap()[0]
        .endpoints
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(
        endpoints.contains(&"Shapes.Chat".to_string()),
        "{endpoints:?}"
    );
    (
        Client::new(registry, Arc::new(TcpTransport::default())),
        stop,
        task,
    )
}

fn note(text: &str) -> Note {
    Note {
        text: text.into(),
        ..Note::default()
    }
}

#[tokio::test]
async fn every_rpc_shape_works_in_protobuf_and_json() {
    let (client, stop, task) = serve().await;
    let shapes = ShapesService::new("micro.test", client.clone());
    for options in [CallOptions::new(), CallOptions::new().json()] {
        // Unary, with a well-known type, a nested message and a oneof on the way.
        let sent = Note {
            text: "hi".into(),
            at: Some(micro_core::pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            kind: protos::micro::test::v1::Kind::Loud as i32,
            tags: vec![note::Tag { name: "t".into() }],
            extra: Some(note::Extra::Number(42)),
        };
        let echoed = shapes
            .echo(Request::new(sent.clone(), options.clone()))
            .await
            .unwrap();
        assert_eq!(
            echoed,
            Note {
                text: "HI".into(),
                ..sent
            }
        );

        // Server streaming.
        let page = Page {
            size: 3,
            token: "p".into(),
        };
        let listed: Vec<String> = shapes
            .list(Request::new(page, options.clone()))
            .await
            .unwrap()
            .map(|n| n.unwrap().text)
            .collect()
            .await;
        assert_eq!(listed, ["p-0", "p-1", "p-2"]);

        // Client streaming.
        let notes = futures::stream::iter(["a", "b", "c"].map(note));
        let summary = shapes
            .collect(Request::new(notes, options.clone()))
            .await
            .unwrap();
        assert_eq!((summary.count, summary.joined.as_str()), (3, "a,b,c"));

        // Bidirectional.
        let mut replies = shapes
            .chat(Request::new(
                futures::stream::iter(["x", "y"].map(note)),
                options.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(replies.recv().await.unwrap().unwrap().text, "re: x");
        assert_eq!(replies.recv().await.unwrap().unwrap().text, "re: y");
        assert!(replies.recv().await.is_none());
    }
    // google.protobuf.Empty both ways, through a client named as protoc-gen-micro names it.
    let ping = PingService::new("micro.test", client);
    ping.ping(micro_core::pbjson_types::Empty {}).await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stream_that_fails_delivers_what_came_before_then_the_error() {
    let (client, stop, task) = serve().await;
    let shapes = ShapesService::new("micro.test", client);
    let mut listed = shapes
        .list(Page {
            size: 2,
            token: "fail".into(),
        })
        .await
        .unwrap();
    assert_eq!(listed.recv().await.unwrap().unwrap().text, "fail-0");
    assert_eq!(listed.recv().await.unwrap().unwrap().text, "fail-1");
    let err = listed.recv().await.unwrap().unwrap_err();
    assert_eq!(err, Error::bad_request("shapes", "asked to fail"));
    assert!(listed.recv().await.is_none());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
