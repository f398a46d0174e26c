//! The consignment service: books consignments onto vessels.
//!
//! Run with `cargo run --example consignment` (with the vessel service running). It
//! registers as `go.micro.srv.consignment` and finds the vessel service by its name,
//! `go.micro.srv.vessel`, through the registry: no address is configured anywhere.
//! Each booking is published as an event on `consignment.created`.

use std::sync::Mutex;

use micro_core::event::Publisher;
use micro_core::{Context, Error, Request, Service, ServiceError};
use micro_examples::consignment::{
    Consignment, GetRequest, Response, ShippingServiceHandler, shipping_service_handler,
};
use micro_examples::vessel::{Specification, VesselService};

/// The service's registry name, equal to its proto package.
const NAME: &str = "go.micro.srv.consignment";
/// Where bookings are announced.
const CREATED: &str = "consignment.created";

struct Shipping {
    vessels: VesselService,
    created: Publisher<Consignment>,
    stored: Mutex<Vec<Consignment>>,
}

impl Shipping {
    fn all(&self) -> Vec<Consignment> {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[micro_core::async_trait]
impl ShippingServiceHandler for Shipping {
    async fn create_consignment(
        &self,
        ctx: Context,
        mut consignment: Consignment,
    ) -> Result<Response, Error> {
        let spec = Specification {
            capacity: i32::try_from(consignment.containers.len()).unwrap_or(i32::MAX),
            max_weight: consignment.weight,
        };
        // Pass the caller's remaining deadline and metadata on to the vessel service.
        let found = self
            .vessels
            .find_available(Request::new(spec, ctx.call_options()))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "no vessel");
                // 404: no vessel fits. Anything else: the vessel service could not be
                // asked; that is this service failing its caller (500), not this
                // service being unavailable (503, which clients would retry).
                Error::new(
                    NAME,
                    format!("no vessel available for this consignment: {}", e.detail),
                    if e.code == 404 { 404 } else { 500 },
                )
            })?;
        let vessel = found.vessel.ok_or_else(|| {
            Error::internal_server_error(NAME, "vessel service answered without a vessel")
        })?;
        consignment.vessel_id = vessel.id;
        {
            let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
            if consignment.id.is_empty() {
                consignment.id = format!("consignment-{}", stored.len() + 1);
            }
            stored.push(consignment.clone());
        }
        tracing::info!(id = %consignment.id, vessel = %consignment.vessel_id, "consignment created");
        // The booking stands whether or not anyone hears of it: a failed announcement
        // is logged, not returned.
        if let Err(e) = self
            .created
            .publish(Request::new(consignment.clone(), ctx.call_options()))
            .await
        {
            tracing::warn!(error = %e, "announcing the consignment failed");
        }
        Ok(Response {
            created: true,
            consignment: Some(consignment),
            consignments: Vec::new(),
        })
    }

    async fn get_consignments(
        &self,
        _ctx: Context,
        _request: GetRequest,
    ) -> Result<Response, Error> {
        Ok(Response {
            consignments: self.all(),
            ..Response::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    micro_examples::init_logging();
    let service = Service::new(NAME)?.version("latest");
    let handler = Shipping {
        vessels: VesselService::new("go.micro.srv.vessel", service.client()),
        created: service.publisher(CREATED),
        stored: Mutex::new(Vec::new()),
    };
    service
        .handle(shipping_service_handler(handler))?
        .run()
        .await
}
