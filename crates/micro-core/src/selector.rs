//! Node selection: which node of a service a call goes to.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use micro_registry::Node;

/// Picks a node for a call (go-micro's selector strategy).
///
/// ```
/// use micro_core::selector::Selector;
/// use micro_core::registry::Node;
///
/// /// Always the first node: for example, to pin calls while debugging.
/// #[derive(Debug)]
/// struct First;
///
/// impl Selector for First {
///     fn select(&self, _service: &str, _nodes: &[&Node]) -> usize {
///         0
///     }
/// }
/// ```
pub trait Selector: Send + Sync + fmt::Debug + 'static {
    /// The index in `nodes` (never empty) of the node to call for `service`.
    /// An index out of range is treated as 0.
    fn select(&self, service: &str, nodes: &[&Node]) -> usize;
}

/// A node at random: the default, as in go-micro.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Selector for Random {
    fn select(&self, _service: &str, nodes: &[&Node]) -> usize {
        fastrand::usize(0..nodes.len().max(1))
    }
}

/// Each node in turn, per service, starting at a random one (as go-micro's
/// `RoundRobin`, so that many clients do not all start on the same node).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Mutex<HashMap<String, usize>>,
}

impl RoundRobin {
    /// A round-robin selector.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn select(&self, service: &str, nodes: &[&Node]) -> usize {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let counter = next
            .entry(service.to_string())
            .or_insert_with(|| fastrand::usize(0..1024));
        let pick = *counter % nodes.len().max(1);
        *counter = counter.wrapping_add(1);
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node::new(format!("n{i}"), format!("10.0.0.{i}:1")))
            .collect()
    }

    #[test]
    fn round_robin_visits_every_node_evenly() {
        let rr = RoundRobin::new();
        let nodes = nodes(3);
        let nodes: Vec<&Node> = nodes.iter().collect();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.select("s", &nodes)] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn random_stays_in_range_and_spreads() {
        let nodes = nodes(4);
        let nodes: Vec<&Node> = nodes.iter().collect();
        let mut counts = [0; 4];
        for _ in 0..4000 {
            counts[Random.select("s", &nodes)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 700), "{counts:?}");
    }
}
