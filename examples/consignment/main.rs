//! The consignment service: books consignments onto vessels.
//!
//! Run with `cargo run --example consignment` (with the vessel service running). It
//! registers as `go.micro.srv.consignment` and finds the vessel service by its name,
//! `go.micro.srv.vessel`, through the registry: no address is configured anywhere.
//! Each booking is published as an event on `consignment.created`.
//!
//! A booking whose caller gave up is not stored: the vessel is looked up within the
//! caller's deadline, and the deadline and cancellation are checked again before
//! storing, so a caller told DEADLINE_EXCEEDED finds nothing booked (one that gives up
//! in the microseconds between that check and the reply is the exception no
//! service can rule out). The event is published after the booking is stored, in the
//! background: the reply does not wait for it, so a slow or unreachable broker never
//! makes a stored booking look failed. The announcement has its own bound
//! ([`ANNOUNCE_TIMEOUT`]), not the caller's deadline (the booking stands once
//! stored); if it fails, or the service stops first, it is logged and lost (events are
//! at most once).

use std::sync::Mutex;
use std::time::Duration;

use micro_core::event::Publisher;
use micro_core::{CallOptions, Context, Error, Request, Service, ServiceError};
use micro_examples::consignment::{
    Consignment, GetRequest, Response, ShippingServiceHandler, shipping_service_handler,
};
use micro_examples::vessel::{Specification, VesselService};

/// The service's registry name, equal to its proto package.
const NAME: &str = "go.micro.srv.consignment";
/// Where bookings are announced.
const CREATED: &str = "consignment.created";
/// How long announcing a stored booking may take.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Publishes `consignment` on [`CREATED`] in the background, with the caller's
    /// metadata, within [`ANNOUNCE_TIMEOUT`]; a failure is logged.
    fn announce(&self, ctx: &Context, consignment: Consignment) {
        let created = self.created.clone();
        let options = ctx
            .metadata()
            .iter()
            .fold(CallOptions::new().timeout(ANNOUNCE_TIMEOUT), |o, (k, v)| {
                o.metadata(k, v)
            })
            // In the call's trace, though published after the call returns.
            .parent(ctx.span());
        tokio::spawn(async move {
            let id = consignment.id.clone();
            if let Err(e) = created.publish(Request::new(consignment, options)).await {
                tracing::warn!(%id, error = %e, "the consignment is stored but announcing it failed");
            }
        });
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
        // The caller may have given up while the vessel service answered: a booking it
        // would never hear of is not stored.
        if ctx.is_cancelled() || ctx.remaining().is_some_and(|left| left.is_zero()) {
            tracing::warn!(vessel = %consignment.vessel_id, "the caller gave up before the booking was stored; nothing stored");
            return Err(Error::timeout(
                NAME,
                "the deadline passed before the consignment was stored; nothing was stored",
            ));
        }
        {
            let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
            if consignment.id.is_empty() {
                consignment.id = format!("consignment-{}", stored.len() + 1);
            }
            stored.push(consignment.clone());
        }
        tracing::info!(id = %consignment.id, vessel = %consignment.vessel_id, "consignment created");
        // The booking stands whether or not anyone hears of it: it is announced after
        // the reply is on its way, and a failed announcement is logged, not returned.
        self.announce(&ctx, consignment.clone());
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
    let logging = micro_examples::init_logging(NAME);
    let service = Service::new(NAME)?.version("latest");
    let handler = Shipping {
        vessels: VesselService::new("go.micro.srv.vessel", service.client()),
        created: service.publisher(CREATED),
        stored: Mutex::new(Vec::new()),
    };
    let served = service
        .handle(shipping_service_handler(handler))?
        .run()
        .await;
    logging.shutdown().await;
    served
}
