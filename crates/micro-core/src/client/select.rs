//! Which node a call goes to: nodes not yet tried in this call first, nodes that
//! lately refused a connection passed over, then the [`Selector`](crate::selector::Selector).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use micro_registry::Node;
use tokio::time::Instant;

use super::{Client, lock};
use crate::{CallOptions, Error};

/// How long a node that refused a connection is passed over (unless no other is left).
/// Long enough to outlast an mDNS goodbye and a restart.
const REFUSED_FOR: Duration = Duration::from_secs(5);

/// Addresses that refused a connection, and when.
pub(super) type Refused = HashMap<String, Instant>;

impl Client {
    /// Chooses a node among `services`, preferring nodes not yet tried in this call
    /// and not lately refusing connections; no I/O and no copy.
    pub(super) fn choose<'a>(
        &self,
        service: &str,
        services: &'a [micro_registry::Service],
        tried: &[String],
        options: &CallOptions,
    ) -> Result<&'a Node, Error> {
        if let Some(id) = &options.node {
            return services
                .iter()
                .flat_map(|s| s.nodes.iter())
                .find(|n| &n.id == id)
                .ok_or_else(|| {
                    Error::service_unavailable(
                        "go.micro.client",
                        format!("service {service}: no node {id}"),
                    )
                });
        }
        let all: Vec<&Node> = services.iter().flat_map(|s| s.nodes.iter()).collect();
        if all.is_empty() {
            return Err(no_nodes(service));
        }
        let any_refused = self.inner.any_refused.load(Ordering::Relaxed);
        let candidates: Vec<&Node> = if tried.is_empty() && !any_refused {
            all
        } else {
            let mut refused = lock(&self.inner.refused);
            if tried.is_empty() && refused.is_empty() {
                all
            } else {
                refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
                if refused.is_empty() {
                    self.inner.any_refused.store(false, Ordering::Relaxed);
                }
                let fresh: Vec<&Node> = all
                    .iter()
                    .copied()
                    .filter(|n| !tried.contains(&n.address) && !refused.contains_key(&n.address))
                    .collect();
                if !fresh.is_empty() {
                    fresh
                } else {
                    let untried: Vec<&Node> = all
                        .iter()
                        .copied()
                        .filter(|n| !tried.contains(&n.address))
                        .collect();
                    if untried.is_empty() { all } else { untried }
                }
            }
        };
        let selector = options.selector.as_ref().unwrap_or(&self.inner.selector);
        let index = if candidates.len() == 1 && options.selector.is_none() {
            0
        } else {
            selector.select(service, &candidates)
        };
        candidates
            .get(index)
            .or_else(|| candidates.first())
            .copied()
            .ok_or_else(|| no_nodes(service))
    }

    /// Remembers that `address` refused a connection.
    pub(super) fn refused(&self, address: &str) {
        lock(&self.inner.refused).insert(address.to_string(), Instant::now());
        self.inner.any_refused.store(true, Ordering::Relaxed);
    }

    /// Whether a node other than `node` and those in `tried` is known for `service`.
    pub(super) async fn has_untried(&self, service: &str, tried: &[String], node: &Node) -> bool {
        self.inner
            .cache
            .lookup(service)
            .await
            .is_ok_and(|services| {
                services
                    .iter()
                    .flat_map(|s| s.nodes.iter())
                    .any(|n| n.address != node.address && !tried.contains(&n.address))
            })
    }
}

fn no_nodes(service: &str) -> Error {
    Error::internal_server_error("go.micro.client", format!("service {service}: no nodes"))
}
