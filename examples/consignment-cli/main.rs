//! The consignment CLI: books the consignment in a JSON file, then lists all of them.
//!
//! Run with `cargo run --example consignment-cli [file.json]` (default
//! `examples/consignment-cli/consignment.json`). It calls `go.micro.srv.consignment`
//! by name.

use std::process::ExitCode;

use micro_core::{Client, Error};
use micro_examples::consignment::{Consignment, GetRequest, ShippingService};

const DEFAULT_FILE: &str = "examples/consignment-cli/consignment.json";

fn read_consignment(path: &str) -> Result<Consignment, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path} is not a valid consignment: {e}"))
}

fn print_consignment(c: &Consignment) {
    println!("  id: {}", c.id);
    println!("  description: {}", c.description);
    println!("  weight: {}", c.weight);
    println!("  vessel_id: {}", c.vessel_id);
    println!("  containers:");
    for container in &c.containers {
        println!(
            "    - customer_id: {}, user_id: {}, origin: {}",
            container.customer_id, container.user_id, container.origin
        );
    }
}

async fn run(path: &str) -> Result<(), String> {
    let consignment = read_consignment(path)?;
    // The same MICRO_* variables as the services read.
    let client = Client::from_env().map_err(|e| e.to_string())?;
    let shipping = ShippingService::new("go.micro.srv.consignment", client);

    let describe = |e: Error| format!("{} (code {}, from {})", e.detail, e.code, e.id);
    let created = shipping
        .create_consignment(consignment)
        .await
        .map_err(describe)?;
    println!("Created: {}", created.created);
    if let Some(c) = &created.consignment {
        print_consignment(c);
    }

    let all = shipping
        .get_consignments(GetRequest {})
        .await
        .map_err(describe)?;
    println!("Consignments: {}", all.consignments.len());
    for c in &all.consignments {
        print_consignment(c);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let logging = micro_examples::init_logging("consignment-cli");
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_FILE.to_string());
    let result = run(&path).await;
    logging.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("consignment-cli: {message}");
            ExitCode::FAILURE
        }
    }
}
