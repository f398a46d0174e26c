//! The generated code of the shippy protos, served in-process: named clients, JSON on
//! generated messages, gRPC reflection over the generated descriptors.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Context, Error, Request, Service};
use micro_examples::vessel::{
    Response, Specification, Vessel, VesselService, VesselServiceHandler, vessel_service_handler,
};

struct OneVessel;

#[micro_core::async_trait]
impl VesselServiceHandler for OneVessel {
    async fn find_available(&self, _ctx: Context, spec: Specification) -> Result<Response, Error> {
        if spec.capacity > 500 {
            return Err(Error::not_found(
                "go.micro.srv.vessel",
                "no vessel found by that spec",
            ));
        }
        Ok(Response {
            vessel: Some(Vessel {
                id: "vessel001".into(),
                capacity: 500,
                ..Vessel::default()
            }),
            vessels: Vec::new(),
        })
    }
}

async fn serve() -> (
    Arc<dyn Registry>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micro_core::ServiceError>>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let service = Service::new("go.micro.srv.vessel")
        .unwrap()
        .address("127.0.0.1:0")
        .registry(Arc::clone(&registry));
    let service = service.handle(vessel_service_handler(OneVessel)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    while registry.get_service("go.micro.srv.vessel").await.is_err() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (registry, stop, task)
}

#[tokio::test]
async fn generated_clients_call_by_name_in_protobuf_and_json() {
    let (registry, stop, task) = serve().await;
    let client = Client::new(Arc::clone(&registry), Arc::new(TcpTransport::default()));
    let vessels = VesselService::new("go.micro.srv.vessel", client);
    let spec = Specification {
        capacity: 3,
        max_weight: 55000,
    };
    let proto = vessels.find_available(spec).await.unwrap();
    let json = vessels
        .find_available(Request::new(spec, CallOptions::new().json()))
        .await
        .unwrap();
    assert_eq!(proto, json);
    assert_eq!(json.vessel.unwrap().id, "vessel001");
    let err = vessels
        .find_available(Specification {
            capacity: 600,
            max_weight: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::not_found("go.micro.srv.vessel", "no vessel found by that spec")
    );

    // The endpoints are in the registry, named as go-micro names them.
    let service = &registry.get_service("go.micro.srv.vessel").await.unwrap()[0];
    assert_eq!(service.endpoints[0].name, "VesselService.FindAvailable");
    assert_eq!(
        service.endpoints[0].request.as_ref().unwrap().type_name,
        "Specification"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_lists_the_services_and_serves_their_protos() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (registry, stop, task) = serve().await;
    let address = registry.get_service("go.micro.srv.vessel").await.unwrap()[0].nodes[0]
        .address
        .clone();
    let channel = micro_core::tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = futures::stream::iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "go.micro.srv.vessel.VesselService".into(),
        )),
    ]);
    let mut replies = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let mut services = Vec::new();
    let mut files = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        match reply.message_response.unwrap() {
            MessageResponse::ListServicesResponse(list) => {
                services = list.service.into_iter().map(|s| s.name).collect();
            }
            MessageResponse::FileDescriptorResponse(found) => {
                files = found.file_descriptor_proto.len()
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(
        services.contains(&"go.micro.srv.vessel.VesselService".to_string()),
        "{services:?}"
    );
    assert!(files >= 1);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
