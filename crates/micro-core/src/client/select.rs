//! Which node a call goes to: nodes not yet tried in this call and not ejected, then
//! the [`Selector`](crate::selector::Selector); and what a call's outcome says about
//! its node (see [`Ejection`](super::Ejection)).

use std::sync::atomic::Ordering;

use micro_registry::{Node, Registry};
use tokio::time::Instant;

use super::{Client, lock};
use crate::{CallOptions, Error};

impl Client {
    /// Chooses a node among `services` for a call that already tried `tried`: no I/O,
    /// no copy. Fails at once, with 503 naming the nodes, when every node was tried or
    /// is ejected: there is no point waiting on nodes known to be dead.
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
            return Err(Error::internal_server_error(
                "go.micro.client",
                format!("service {service}: no nodes"),
            ));
        }
        let selector = options.selector.as_ref().unwrap_or(&self.inner.selector);
        let pick = |candidates: &[&'a Node]| -> Option<&'a Node> {
            let index = if candidates.len() == 1 && options.selector.is_none() {
                0
            } else {
                selector.select(service, candidates)
            };
            // An index out of range is the first candidate (documented on `Selector`).
            candidates
                .get(index)
                .or_else(|| candidates.first())
                .copied()
        };
        if tried.is_empty() && !self.inner.any_health.load(Ordering::Relaxed) {
            return pick(&all).ok_or_else(|| nowhere(service, &all, tried));
        }
        let mut health = lock(&self.inner.health);
        if health.is_empty() {
            self.inner.any_health.store(false, Ordering::Relaxed);
        }
        let now = Instant::now();
        let eligible: Vec<&Node> = all
            .iter()
            .copied()
            .filter(|n| !tried.contains(&n.address) && !health.is_ejected(n, now))
            .collect();
        let chosen = pick(&eligible).ok_or_else(|| nowhere(service, &all, tried))?;
        // A node whose penalty just ended is probed by this call: the penalty is
        // re-armed so that concurrent calls keep away until the probe has answered.
        let _ = health.standing(chosen, &self.inner.ejection, now);
        Ok(chosen)
    }

    /// Whether a node not in `tried` and not ejected is known for `service`.
    pub(super) fn has_candidate(&self, service: &str, tried: &[String]) -> bool {
        let Some(services) = self.inner.cache.cached(service) else {
            return false;
        };
        let health = lock(&self.inner.health);
        let now = Instant::now();
        services
            .iter()
            .flat_map(|s| s.nodes.iter())
            .any(|n| !tried.contains(&n.address) && !health.is_ejected(n, now))
    }

    /// A call to `address` succeeded.
    pub(super) fn succeeded(&self, address: &str) {
        if self.inner.any_health.load(Ordering::Relaxed) {
            if let Some(service) = lock(&self.inner.health).success(address) {
                crate::observe::node_restored(&service);
            }
        }
    }

    /// `node` of `service` refused a connection: ejected at once, its connection
    /// dropped, and the registry asked to check it.
    pub(super) fn refused(&self, service: &str, node: &Node) {
        let penalty =
            lock(&self.inner.health).refused(service, node, &self.inner.ejection, Instant::now());
        crate::observe::node_ejected(service, true);
        self.inner.any_health.store(true, Ordering::Relaxed);
        self.forget(&node.address);
        self.inner.cache.suspect(service, node);
        tracing::debug!(service, node = %node.id, address = %node.address, ?penalty, "node refused a connection: ejected");
    }

    /// `node` of `service` answered UNAVAILABLE or its connection broke.
    pub(super) fn failed(&self, service: &str, node: &Node) {
        let Some(services) = self.inner.cache.cached(service) else {
            return;
        };
        let nodes: Vec<&Node> = services.iter().flat_map(|s| s.nodes.iter()).collect();
        let ejected = lock(&self.inner.health).failed(
            service,
            node,
            &nodes,
            &self.inner.ejection,
            Instant::now(),
        );
        self.inner.any_health.store(true, Ordering::Relaxed);
        if let Some(penalty) = ejected {
            crate::observe::node_ejected(service, false);
            tracing::info!(service, node = %node.id, address = %node.address, ?penalty, "node failing: ejected");
        }
    }
}

/// The error of a call with no node left to try: 503, naming the nodes.
fn nowhere(service: &str, all: &[&Node], tried: &[String]) -> Error {
    let nodes: Vec<String> = all
        .iter()
        .map(|n| {
            let state = if tried.contains(&n.address) {
                "tried"
            } else {
                "ejected"
            };
            format!("{} at {} ({state})", n.id, n.address)
        })
        .collect();
    Error::service_unavailable(
        "go.micro.client",
        format!(
            "service {service}: no node left to call: {}",
            nodes.join(", ")
        ),
    )
}
