//! Node ejection (failure accrual, as linkerd and Envoy do it): nodes that fail are
//! taken out of the choice for a penalty that grows each time, then probed back.
//!
//! - A refused connection ejects the node at once: the request never left, and a
//!   refusing node is most likely dead.
//! - UNAVAILABLE and other transport failures eject after
//!   [`Ejection::consecutive_failures`] in a row (Envoy's 5), but never more than
//!   [`Ejection::max_ejected_percent`] of a service's nodes (Envoy's 10 %, at least
//!   one): a service whose every node is overloaded is not emptied by it.
//! - The penalty starts at [`Ejection::base_penalty`] (linkerd's 1 s) and doubles with
//!   each ejection in a row, up to [`Ejection::max_penalty`] (linkerd's 60 s). When it
//!   ends, one call probes the node; a success restores it, a failure ejects it again
//!   for twice as long.

use std::collections::HashMap;
use std::time::Duration;

use micro_registry::Node;
use tokio::time::Instant;

/// When nodes are ejected and for how long. The defaults are Envoy's and linkerd's.
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::Ejection;
///
/// let ejection = Ejection::default().consecutive_failures(3).max_penalty(Duration::from_secs(30));
/// assert_eq!(ejection, Ejection::default().consecutive_failures(3).max_penalty(Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    consecutive_failures: u32,
    base_penalty: Duration,
    max_penalty: Duration,
    max_ejected_percent: u32,
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_penalty: Duration::from_secs(1),
            max_penalty: Duration::from_secs(60),
            max_ejected_percent: 10,
        }
    }
}

impl Ejection {
    /// UNAVAILABLE or transport failures in a row that eject a node (default 5; 0
    /// ejects only nodes that refuse connections).
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// The first penalty (default 1 s); it doubles with each ejection in a row.
    #[must_use]
    pub fn base_penalty(mut self, penalty: Duration) -> Self {
        self.base_penalty = penalty;
        self
    }

    /// The longest penalty (default 60 s).
    #[must_use]
    pub fn max_penalty(mut self, penalty: Duration) -> Self {
        self.max_penalty = penalty;
        self
    }

    /// The most of a service's nodes ejected for failing in a row, in percent
    /// (default 10; at least one node). Nodes that refuse connections are ejected
    /// whatever the share.
    #[must_use]
    pub fn max_ejected_percent(mut self, percent: u32) -> Self {
        self.max_ejected_percent = percent.min(100);
        self
    }

    fn penalty(&self, times: u32) -> Duration {
        let doubled = self
            .base_penalty
            .saturating_mul(1u32 << times.saturating_sub(1).min(16));
        doubled.min(self.max_penalty)
    }
}

/// What the client knows of one node's recent calls.
#[derive(Debug, Default)]
pub(super) struct Health {
    failures: u32,
    /// Ejections in a row (0: not ejected since its last success).
    times: u32,
    /// Out of the choice until then.
    until: Option<Instant>,
    /// The service the node serves, for the metrics.
    service: String,
}

/// The health of every node that lately failed, by address.
#[derive(Debug, Default)]
pub(super) struct Ejected {
    nodes: HashMap<String, Health>,
}

/// A node's standing for the next call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Callable.
    Eligible,
    /// Out of the choice until its penalty ends.
    Ejected,
}

impl Ejected {
    /// Whether nothing is known against any node (the common case: no lock needed).
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `node`'s standing now. A node whose penalty just ended is eligible for one
    /// probe: the next caller re-arms the penalty, so that concurrent calls keep
    /// away until the probe has answered.
    pub(super) fn standing(&mut self, node: &Node, policy: &Ejection, now: Instant) -> Standing {
        let Some(health) = self.nodes.get_mut(&node.address) else {
            return Standing::Eligible;
        };
        match health.until {
            Some(until) if until > now => Standing::Ejected,
            Some(_) => {
                health.until = Some(now + policy.penalty(health.times));
                Standing::Eligible
            }
            None => Standing::Eligible,
        }
    }

    /// Whether `node` is out of the choice now, without claiming a probe.
    pub(super) fn is_ejected(&self, node: &Node, now: Instant) -> bool {
        self.nodes
            .get(&node.address)
            .and_then(|h| h.until)
            .is_some_and(|until| until > now)
    }

    /// A call to `address` succeeded: it is healthy again. Returns its service when
    /// it had been ejected (it is restored).
    pub(super) fn success(&mut self, address: &str) -> Option<String> {
        self.nodes
            .remove(address)
            .filter(|health| health.times > 0)
            .map(|health| health.service)
    }

    /// `node` refused a connection: ejected at once. Returns the penalty.
    pub(super) fn refused(
        &mut self,
        service: &str,
        node: &Node,
        policy: &Ejection,
        now: Instant,
    ) -> Duration {
        let health = self.entry(service, node);
        health.times = health.times.saturating_add(1);
        health.failures = 0;
        let penalty = policy.penalty(health.times);
        health.until = Some(now + penalty);
        penalty
    }

    /// `node` of a service with `nodes` failed (UNAVAILABLE, a broken connection).
    /// Returns the penalty when this failure ejected it.
    pub(super) fn failed(
        &mut self,
        service: &str,
        node: &Node,
        nodes: &[&Node],
        policy: &Ejection,
        now: Instant,
    ) -> Option<Duration> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let ejected_now = nodes.iter().filter(|n| self.is_ejected(n, now)).count();
        let cap = (nodes.len() * policy.max_ejected_percent as usize / 100).max(1);
        let health = self.entry(service, node);
        health.failures = health.failures.saturating_add(1);
        if health.failures < policy.consecutive_failures || ejected_now >= cap {
            return None;
        }
        health.failures = 0;
        health.times = health.times.saturating_add(1);
        let penalty = policy.penalty(health.times);
        health.until = Some(now + penalty);
        Some(penalty)
    }

    /// What is known of `node` of `service`, created empty.
    fn entry(&mut self, service: &str, node: &Node) -> &mut Health {
        self.nodes
            .entry(node.address.clone())
            .or_insert_with(|| Health {
                service: service.to_string(),
                ..Health::default()
            })
    }

    /// Forgets a node that left the registry.
    pub(super) fn forget(&mut self, address: &str) {
        self.nodes.remove(address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> Node {
        Node::new(format!("n{n}"), format!("127.0.0.1:{n}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_node_is_ejected_with_a_growing_penalty_and_probed_back() {
        let policy = Ejection::default();
        let mut ejected = Ejected::default();
        let a = node(1);
        let t0 = Instant::now();
        assert_eq!(
            ejected.refused("s", &a, &policy, t0),
            Duration::from_secs(1)
        );
        assert_eq!(ejected.standing(&a, &policy, t0), Standing::Ejected);
        // The penalty ends: one probe, and the others keep away meanwhile.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(ejected.standing(&a, &policy, t1), Standing::Eligible);
        assert_eq!(ejected.standing(&a, &policy, t1), Standing::Ejected);
        // The probe is refused again: twice as long.
        assert_eq!(
            ejected.refused("s", &a, &policy, t1),
            Duration::from_secs(2)
        );
        for _ in 0..20 {
            ejected.refused("s", &a, &policy, t1);
        }
        assert_eq!(
            ejected.refused("s", &a, &policy, t1),
            Duration::from_secs(60)
        );
        // A success restores it.
        assert_eq!(ejected.success(&a.address).as_deref(), Some("s"));
        assert_eq!(ejected.standing(&a, &policy, t1), Standing::Eligible);
        assert!(ejected.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_but_never_more_than_the_share() {
        let policy = Ejection::default().consecutive_failures(3);
        let mut ejected = Ejected::default();
        let (a, b, c) = (node(1), node(2), node(3));
        let all = [&a, &b, &c];
        let now = Instant::now();
        assert_eq!(ejected.failed("s", &a, &all, &policy, now), None);
        assert_eq!(ejected.failed("s", &a, &all, &policy, now), None);
        assert_eq!(
            ejected.failed("s", &a, &all, &policy, now),
            Some(Duration::from_secs(1))
        );
        // 10 % of 3 nodes is less than one: one node may be out, not two.
        for _ in 0..10 {
            assert_eq!(ejected.failed("s", &b, &all, &policy, now), None);
        }
        assert!(!ejected.is_ejected(&b, now));
        // A refusing node goes whatever the share.
        ejected.refused("s", &c, &policy, now);
        assert!(ejected.is_ejected(&c, now));
    }
}
