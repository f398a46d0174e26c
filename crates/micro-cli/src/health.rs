//! `health`: grpc.health.v1 `Check` against every node, with its latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::Registry;
use micro_core::{CallOptions, Request};
use serde_json::json;

use crate::args::Output;
use crate::exit::CliError;
use crate::output::{Table, colour, emit, line, status};

/// grpc.health.v1's `HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    /// The service asked about: its registry name.
    #[prost(string, tag = "1")]
    service: String,
}
impl micro_core::Message for HealthCheckRequest {}

/// grpc.health.v1's `HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    /// 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    #[prost(int32, tag = "1")]
    status: i32,
}
impl micro_core::Message for HealthCheckResponse {}

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The name of a health status.
fn status_name(status: i32) -> &'static str {
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Asks node `node` of `service` about `about`, within `timeout`, without retries.
async fn check(
    client: &micro_core::Client,
    service: &str,
    node: &str,
    about: &str,
    timeout: Duration,
) -> Result<HealthCheckResponse, micro_core::Error> {
    client
        .call::<HealthCheckRequest, HealthCheckResponse>(
            service,
            CHECK,
            Request::new(
                HealthCheckRequest {
                    service: about.to_string(),
                },
                CallOptions::new()
                    .node(node.to_string())
                    .timeout(timeout)
                    .retries(0),
            ),
        )
        .await
}

/// One node's answer.
#[derive(Debug)]
struct Checked {
    service: String,
    node: String,
    address: String,
    status: String,
    latency: Duration,
    error: Option<String>,
}

/// `micro health [service]`: checks every node; fails (exit 7) when any node is not
/// SERVING, and with 4 when the service is not in the registry.
pub async fn health(
    registry: Arc<dyn Registry>,
    service: Option<String>,
    timeout: Duration,
    output: Output,
) -> Result<(), CliError> {
    let services = match &service {
        Some(name) => registry.get_service(name).await?,
        None => registry.list_services().await?,
    };
    let client = crate::env::client(Arc::clone(&registry));
    let mut checks = Vec::new();
    for record in &services {
        for node in &record.nodes {
            let client = client.clone();
            let name = record.name.clone();
            let node = node.clone();
            checks.push(async move {
                let started = Instant::now();
                // Asked about the name it registers under; a server that does not know
                // that name (a registry broker's subscriber endpoint) about itself, "".
                let mut answer = check(&client, &name, &node.id, &name, timeout).await;
                if matches!(&answer, Err(e) if e.kind() == micro_core::ErrorKind::NotFound) {
                    answer = check(&client, &name, &node.id, "", timeout).await;
                }
                let latency = started.elapsed();
                let (status, error) = match answer {
                    Ok(response) => (status_name(response.status).to_string(), None),
                    Err(e) => {
                        let status = match e.kind() {
                            micro_core::ErrorKind::ServiceUnavailable
                            | micro_core::ErrorKind::Timeout => "UNREACHABLE",
                            _ => "ERROR",
                        };
                        (status.to_string(), Some(e.detail))
                    }
                };
                Checked {
                    service: name,
                    node: node.id,
                    address: node.address,
                    status,
                    latency,
                    error,
                }
            });
        }
    }
    let mut results = micro_core::futures::future::join_all(checks).await;
    results.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
    let failing = results.iter().filter(|c| c.status != "SERVING").count();
    match output {
        Output::Json => {
            let list: Vec<_> = results
                .iter()
                .map(|c| {
                    json!({
                        "service": c.service,
                        "node": c.node,
                        "address": c.address,
                        "status": c.status,
                        "latency_ms": (c.latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
                        "error": c.error,
                    })
                })
                .collect();
            line(&serde_json::to_string_pretty(&list).unwrap_or_default())?;
        }
        Output::Text => {
            let on = colour();
            let mut table =
                Table::new(&["SERVICE", "NODE", "ADDRESS", "STATUS", "LATENCY", "ERROR"]);
            for c in &results {
                table.row(vec![
                    c.service.clone(),
                    c.node.clone(),
                    c.address.clone(),
                    status(&c.status, c.status == "SERVING", on),
                    format!("{:.1}ms", c.latency.as_secs_f64() * 1000.0),
                    c.error.clone().unwrap_or_default(),
                ]);
            }
            emit(&table.render(on))?;
        }
    }
    if results.is_empty() {
        return Err(match service {
            Some(name) => micro_core::registry::Error::NotFound(name).into(),
            None => CliError::NotServing("no service in the registry".to_string()),
        });
    }
    if failing > 0 {
        return Err(CliError::NotServing(format!(
            "{failing} of {} nodes not SERVING",
            results.len()
        )));
    }
    Ok(())
}
