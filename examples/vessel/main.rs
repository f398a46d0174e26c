//! The vessel service: finds a vessel that can take a load.
//!
//! Run with `cargo run --example vessel`. It registers as `go.micro.srv.vessel` in the
//! registry `MICRO_REGISTRY` names (default mDNS) and listens on `MICRO_SERVER_ADDRESS`
//! (default: a free port). It listens for bookings on `consignment.created` and logs
//! which vessel each consignment was booked on.

use micro_core::{Context, Error, Service, ServiceError};
use micro_examples::consignment::Consignment;
use micro_examples::vessel::{
    Response, Specification, Vessel, VesselServiceHandler, vessel_service_handler,
};

/// The service's registry name, equal to its proto package.
const NAME: &str = "go.micro.srv.vessel";

/// An in-memory fleet.
struct Fleet {
    vessels: Vec<Vessel>,
}

impl Fleet {
    /// The fleet of the tutorial: one vessel.
    fn seeded() -> Self {
        Self {
            vessels: vec![Vessel {
                id: "vessel001".into(),
                name: "Boaty McBoatface".into(),
                max_weight: 200_000,
                capacity: 500,
                ..Vessel::default()
            }],
        }
    }

    /// The first vessel with room for `spec`.
    fn find_available(&self, spec: &Specification) -> Option<&Vessel> {
        self.vessels
            .iter()
            .find(|v| v.capacity >= spec.capacity && v.max_weight >= spec.max_weight)
    }
}

#[micro_core::async_trait]
impl VesselServiceHandler for Fleet {
    async fn find_available(&self, _ctx: Context, spec: Specification) -> Result<Response, Error> {
        match self.find_available(&spec) {
            Some(vessel) => {
                tracing::info!(vessel = %vessel.id, capacity = spec.capacity, max_weight = spec.max_weight, "vessel found");
                Ok(Response {
                    vessel: Some(vessel.clone()),
                    vessels: Vec::new(),
                })
            }
            None => Err(Error::not_found(
                NAME,
                format!(
                    "no vessel found by that spec (capacity {}, max weight {})",
                    spec.capacity, spec.max_weight
                ),
            )),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    let logging = micro_examples::init_logging(NAME);
    let service = Service::new(NAME)?
        .version("latest")
        .handle(vessel_service_handler(Fleet::seeded()))?
        .subscribe(
            "consignment.created",
            |_ctx: Context, booked: Consignment| async move {
                tracing::info!(
                    vessel = %booked.vessel_id,
                    consignment = %booked.id,
                    containers = booked.containers.len(),
                    weight = booked.weight,
                    "booking received"
                );
                Ok::<(), Error>(())
            },
        );
    let served = service.run().await;
    logging.shutdown().await;
    served
}
