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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already set, which is then fine to keep.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
