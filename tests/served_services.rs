//! A server's reflection and health know exactly the services it serves, though the
//! root `build.rs` compiles several protos (the shippy vessel and consignment
//! services, the codegen's sample `Shapes` and `PingService`) in one `compile()` call,
//! so every generated package carries the descriptors of all of them.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod protos {
    // The generated code allows what it leaves unused and undocumented.
    micro_core::include_protos!();
}

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::{Context, Error, Service, ServiceError, server::Handler};
use protos::go::micro::srv::vessel::{
    Response, Specification, VesselServiceHandler, vessel_service_handler,
};
use protos::micro::test::v1::{PingServiceHandler, ping_service_handler};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Vessels;

#[micro_core::async_trait]
impl VesselServiceHandler for Vessels {
    async fn find_available(&self, _ctx: Context, _spec: Specification) -> Result<Response, Error> {
        Ok(Response::default())
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

/// Serves `handler` as `name` on loopback; returns its address and what stops it.
async fn serve(
    name: &str,
    handler: Handler,
) -> (
    String,
    oneshot::Sender<()>,
    JoinHandle<Result<(), ServiceError>>,
) {
    let served = handler.full_name();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let service = Service::new(name)
        .unwrap()
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry))
        .handle(handler)
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let address = loop {
        if let Ok(found) = registry.get_service(name).await {
            break found[0].nodes[0].address.clone();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Health turns SERVING just after the registration: wait for it, on the served
    // proto service.
    let mut health = HealthClient::new(channel(&address).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while health
        .check(HealthCheckRequest {
            service: served.clone(),
        })
        .await
        .map(|r| r.into_inner().status)
        .ok()
        != Some(1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{served} is not SERVING"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (address, stop, task)
}

async fn channel(address: &str) -> micro_core::tonic::transport::Channel {
    micro_core::tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// What reflection v1 answers: the services it lists, and for each symbol asked
/// about, whether a file containing it was found (each asked on a stream of its own:
/// tonic-reflection ends the stream with NOT_FOUND for an unknown symbol).
async fn reflect(address: &str, symbols: &[&str]) -> (BTreeSet<String>, Vec<bool>) {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut reflection = ServerReflectionClient::new(channel(address).await);
    let mut ask = async |message| {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let mut replies = reflection
            .server_reflection_info(futures::stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        replies
            .message()
            .await
            .map(|reply| reply.unwrap().message_response.unwrap())
    };
    let services = match ask(MessageRequest::ListServices(String::new())).await {
        Ok(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reply {other:?}"),
    };
    let mut found = Vec::new();
    for symbol in symbols {
        match ask(MessageRequest::FileContainingSymbol(symbol.to_string())).await {
            Ok(MessageResponse::FileDescriptorResponse(files)) => {
                found.push(!files.file_descriptor_proto.is_empty());
            }
            Ok(MessageResponse::ErrorResponse(error)) => {
                assert_eq!(error.error_code, 5, "{symbol}: {error:?}"); // 5 = NOT_FOUND
                found.push(false);
            }
            Err(status) => {
                assert_eq!(status.code(), micro_core::tonic::Code::NotFound, "{symbol}");
                found.push(false);
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    (services, found)
}

/// The services reflection v1alpha lists.
async fn reflect_v1alpha(address: &str) -> BTreeSet<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let mut reflection = ServerReflectionClient::new(channel(address).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    match replies.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The health status of each name: `Ok(1)` is SERVING, `Err(NotFound)` unknown.
async fn health(address: &str, names: &[&str]) -> Vec<Result<i32, micro_core::tonic::Code>> {
    let mut health = HealthClient::new(channel(address).await);
    let mut out = Vec::new();
    for name in names {
        out.push(
            health
                .check(HealthCheckRequest {
                    service: name.to_string(),
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|status| status.code()),
        );
    }
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

const BUILTINS: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test]
async fn a_server_of_one_service_lists_only_it_though_more_were_compiled() {
    let (address, stop, task) = serve("go.micro.srv.vessel", vessel_service_handler(Vessels)).await;

    let (services, found) = reflect(
        &address,
        &[
            "go.micro.srv.vessel.VesselService",
            "go.micro.srv.consignment.ShippingService",
            "grpc.health.v1.Health",
            // A message of the unserved proto still resolves: only services are cut.
            "go.micro.srv.consignment.Consignment",
        ],
    )
    .await;
    let mut expected = set(&BUILTINS);
    expected.insert("go.micro.srv.vessel.VesselService".into());
    assert_eq!(services, expected);
    assert_eq!(found, [true, false, true, true]);
    assert_eq!(reflect_v1alpha(&address).await, expected);

    let statuses = health(
        &address,
        &[
            "",
            "go.micro.srv.vessel",
            "go.micro.srv.vessel.VesselService",
            "go.micro.srv.consignment.ShippingService",
            "go.micro.srv.consignment",
            "micro.test.v1.Shapes",
        ],
    )
    .await;
    use micro_core::tonic::Code::NotFound;
    assert_eq!(
        statuses,
        [
            Ok(1),
            Ok(1),
            Ok(1),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound)
        ]
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_service_is_cut_from_a_proto_whose_other_service_is_served() {
    // shapes.proto holds two services, Shapes and PingService; serve PingService only.
    let (address, stop, task) = serve("micro.test", ping_service_handler(Ping)).await;

    let (services, found) = reflect(
        &address,
        &["micro.test.v1.PingService", "micro.test.v1.Shapes"],
    )
    .await;
    let mut expected = set(&BUILTINS);
    expected.insert("micro.test.v1.PingService".into());
    assert_eq!(services, expected);
    assert_eq!(found, [true, false]);

    let statuses = health(
        &address,
        &[
            "micro.test",
            "micro.test.v1.PingService",
            "micro.test.v1.Shapes",
        ],
    )
    .await;
    assert_eq!(
        statuses,
        [Ok(1), Ok(1), Err(micro_core::tonic::Code::NotFound)]
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
