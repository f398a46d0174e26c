//! The shippy tutorial's services on micro: shared code of the worked examples.
//!
//! - `examples/vessel`: `go.micro.srv.vessel`, finds a vessel for a load.
//! - `examples/consignment`: `go.micro.srv.consignment`, books consignments onto
//!   vessels it finds through the vessel service, by name.
//! - `examples/consignment-cli`: books the consignment in a JSON file and lists them.

/// `go.micro.srv.vessel`: messages, `VesselServiceHandler`, `VesselService` client.
pub mod vessel {
    micro_core::include_proto!("go.micro.srv.vessel");
}

/// `go.micro.srv.consignment`: messages, `ShippingServiceHandler`, `ShippingService` client.
pub mod consignment {
    micro_core::include_proto!("go.micro.srv.consignment");
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), and, with the `otel`
/// feature (on by default) and `OTEL_EXPORTER_OTLP_ENDPOINT` set, exports traces as
/// `service_name` (unless `OTEL_SERVICE_NAME` says otherwise). Call within the tokio
/// runtime; [`Logging::shutdown`] flushes the traces before the program exits.
pub fn init_logging(service_name: &str) -> Logging {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // micro's call spans are for the traces, not the log (unless RUST_LOG names them).
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(micro_core::telemetry::TARGET));
    if let (false, Ok(off)) = (
        named,
        format!("{}=off", micro_core::telemetry::TARGET).parse(),
    ) {
        filter = filter.add_directive(off);
    }
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter);
    #[cfg(feature = "otel")]
    let (otel, guard) = micro_core::telemetry::Telemetry::from_env()
        .service_name(
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| service_name.to_string()),
        )
        .layer();
    #[cfg(not(feature = "otel"))]
    let (otel, guard) = (None::<tracing_subscriber::layer::Identity>, ());
    #[cfg(not(feature = "otel"))]
    let _ = service_name;
    // Fails only if a subscriber is already set, which is then fine to keep.
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init();
    Logging { guard }
}

/// What [`init_logging`] set up: [`Logging::shutdown`] flushes the traces.
#[derive(Debug)]
#[must_use = "call shutdown() at the end, or buffered spans are lost"]
pub struct Logging {
    #[cfg(feature = "otel")]
    guard: micro_core::telemetry::TelemetryGuard,
    #[cfg(not(feature = "otel"))]
    guard: (),
}

impl Logging {
    /// Exports the spans still buffered, waiting at most two seconds.
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        self.guard.shutdown(std::time::Duration::from_secs(2)).await;
        #[cfg(not(feature = "otel"))]
        let () = self.guard;
    }
}
