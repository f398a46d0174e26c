//! `services`, `describe` and `watch`: what the registry knows.

use std::collections::BTreeMap;
use std::sync::Arc;

use micro_core::registry::{Action, Registry, Service, Value, WatchOptions};
use serde_json::json;

use crate::args::Output;
use crate::exit::CliError;
use crate::output::{Table, bold, colour, emit, line};

/// One service name: its versions and how many nodes each has.
#[derive(Debug, Default)]
struct Summary {
    versions: BTreeMap<String, usize>,
}

/// `micro services`: every service name, its versions and node counts.
pub async fn services(registry: &Arc<dyn Registry>, output: Output) -> Result<(), CliError> {
    let listed = registry.list_services().await?;
    let mut names: BTreeMap<String, Summary> = BTreeMap::new();
    let mut without_nodes = Vec::new();
    for service in &listed {
        if service.nodes.is_empty() {
            // Some registries (etcd) list names only: the nodes are fetched below.
            without_nodes.push(service.name.clone());
        }
        let summary = names.entry(service.name.clone()).or_default();
        *summary.versions.entry(service.version.clone()).or_default() += service.nodes.len();
    }
    without_nodes.sort();
    without_nodes.dedup();
    let fetched = micro_core::futures::future::join_all(
        without_nodes.iter().map(|name| registry.get_service(name)),
    )
    .await;
    for (name, result) in without_nodes.iter().zip(fetched) {
        if let Ok(versions) = result {
            let summary = names.entry(name.clone()).or_default();
            summary.versions.clear();
            for service in versions {
                *summary.versions.entry(service.version).or_default() += service.nodes.len();
            }
        }
    }
    match output {
        Output::Json => {
            let list: Vec<_> = names
                .iter()
                .map(|(name, summary)| {
                    json!({
                        "name": name,
                        "versions": summary.versions.iter().map(|(v, n)| json!({"version": v, "nodes": n})).collect::<Vec<_>>(),
                        "nodes": summary.versions.values().sum::<usize>(),
                    })
                })
                .collect();
            line(&serde_json::to_string_pretty(&list).unwrap_or_default())?;
        }
        Output::Text => {
            let mut table = Table::new(&["SERVICE", "VERSIONS", "NODES"]);
            for (name, summary) in &names {
                let versions: Vec<&str> = summary
                    .versions
                    .keys()
                    .map(|v| if v.is_empty() { "-" } else { v.as_str() })
                    .collect();
                table.row(vec![
                    name.clone(),
                    versions.join(","),
                    summary.versions.values().sum::<usize>().to_string(),
                ]);
            }
            emit(&table.render(colour()))?;
        }
    }
    Ok(())
}

/// A type with its fields, as one line: `Specification {capacity int32, max_weight int32}`.
fn type_text(value: Option<&Value>) -> String {
    fn fields(value: &Value, depth: usize) -> String {
        if value.values.is_empty() || depth > 4 {
            return String::new();
        }
        let inner: Vec<String> = value
            .values
            .iter()
            .map(|f| format!("{} {}{}", f.name, f.type_name, fields(f, depth + 1)))
            .collect();
        format!(" {{{}}}", inner.join(", "))
    }
    match value {
        None => "-".to_string(),
        Some(value) => format!("{}{}", value.type_name, fields(value, 0)),
    }
}

/// The registry's metadata as `k=v, k=v`, sorted.
fn metadata_text(metadata: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(", ")
}

/// `micro describe <service>`: every version, node and endpoint.
pub async fn describe(
    registry: &Arc<dyn Registry>,
    name: &str,
    output: Output,
) -> Result<(), CliError> {
    let mut versions = registry.get_service(name).await?;
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    if output == Output::Json {
        line(&serde_json::to_string_pretty(&versions).unwrap_or_default())?;
        return Ok(());
    }
    let on = colour();
    let mut text = String::new();
    for (i, service) in versions.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} {}  {} {}\n",
            bold("service", on),
            service.name,
            bold("version", on),
            if service.version.is_empty() {
                "-"
            } else {
                &service.version
            }
        ));
        if !service.metadata.is_empty() {
            text.push_str(&format!(
                "{} {}\n",
                bold("metadata", on),
                metadata_text(&service.metadata)
            ));
        }
        text.push('\n');
        let mut nodes = Table::new(&["NODE", "ADDRESS", "METADATA"]);
        for node in &service.nodes {
            nodes.row(vec![
                node.id.clone(),
                node.address.clone(),
                metadata_text(&node.metadata),
            ]);
        }
        text.push_str(&nodes.render(on));
        text.push('\n');
        let mut endpoints = Table::new(&["ENDPOINT", "REQUEST", "RESPONSE", "STREAM"]);
        for endpoint in sorted(service) {
            endpoints.row(vec![
                endpoint.name.clone(),
                type_text(endpoint.request.as_ref()),
                type_text(endpoint.response.as_ref()),
                endpoint
                    .metadata
                    .get("stream")
                    .map_or("false", String::as_str)
                    .to_string(),
            ]);
        }
        text.push_str(&endpoints.render(on));
    }
    emit(&text)?;
    Ok(())
}

fn sorted(service: &Service) -> Vec<&micro_core::registry::Endpoint> {
    let mut endpoints: Vec<_> = service.endpoints.iter().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints
}

/// The name of an action, as printed.
fn action_name(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Delete => "delete",
    }
}

/// `micro watch [service]`: registry events, one line each, flushed, until Ctrl-C.
pub async fn watch(
    registry: &Arc<dyn Registry>,
    service: Option<String>,
    output: Output,
) -> Result<(), CliError> {
    let options = match service {
        Some(name) => WatchOptions::service(name),
        None => WatchOptions::default(),
    };
    let mut watcher = registry.watch(options).await?;
    let on = colour();
    let interrupted = crate::interrupted();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = watcher.next() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(micro_core::registry::Error::Lagged(n)) => {
                tracing::warn!(missed = n, "watch fell behind; events were missed");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let action = action_name(event.action);
        let nodes: Vec<(String, String)> = if event.service.nodes.is_empty() {
            vec![(String::new(), String::new())]
        } else {
            event
                .service
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.address.clone()))
                .collect()
        };
        for (node, address) in nodes {
            match output {
                Output::Json => line(
                    &json!({
                        "action": action,
                        "service": event.service.name,
                        "version": event.service.version,
                        "node": node,
                        "address": address,
                    })
                    .to_string(),
                )?,
                Output::Text => line(&format!(
                    "{}  {}  {}  {}  {}",
                    crate::output::status(
                        &format!("{action:<6}"),
                        event.action != Action::Delete,
                        on
                    ),
                    event.service.name,
                    if event.service.version.is_empty() {
                        "-"
                    } else {
                        &event.service.version
                    },
                    if node.is_empty() { "-" } else { &node },
                    if address.is_empty() { "-" } else { &address },
                ))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_show_their_fields() {
        let mut spec = Value::new("Specification", "Specification");
        spec.values = vec![
            Value::new("capacity", "int32"),
            Value::new("max_weight", "int32"),
        ];
        assert_eq!(
            type_text(Some(&spec)),
            "Specification {capacity int32, max_weight int32}"
        );
        assert_eq!(type_text(None), "-");
    }
}
