//! Asking suspected nodes whether they are alive.
//!
//! A client that could not connect to a node calls [`Registry::suspect`]; mdns-sd
//! dropping an instance does the same (see [`Shared::on_event`]). The node is asked
//! directly ([`query::ask`]); one that does not answer within [`SUSPECT_WINDOW`] is
//! dropped from this process's view, with a Delete event, instead of lingering for its
//! TTL. A node that answers stays, and so does every node when the question cannot be
//! asked at all (no socket, no interface): an error of this process is no news about
//! the node.
//!
//! One thread per registry does the asking, and only while there is something to ask:
//! suspected nodes are queued (once each: suspecting a node that is queued or being
//! asked does nothing) and asked in rounds of at most [`MAX_ROUND`]. Only known
//! instances are queued, so the queue holds at most [`MAX_INSTANCES`] entries.
//!
//! [`Registry::suspect`]: crate::Registry::suspect
//! [`Shared::on_event`]: super::state::Shared::on_event
//! [`SUSPECT_WINDOW`]: super::SUSPECT_WINDOW
//! [`MAX_INSTANCES`]: super::MAX_INSTANCES

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::query::{self, Asked};
use super::state::Shared;
use super::{MAX_INSTANCES, SUSPECT_WINDOW, interface_ips, spawn};

/// The most nodes asked in one round (one query packet each).
const MAX_ROUND: usize = 64;

/// A node to check: what to ask, and which node it is (service name, node id).
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) asked: Asked,
    pub(super) key: (String, String),
    /// Suspected (a client could not connect, or mdns-sd dropped it): forgotten at
    /// once when it does not answer. A node that has only gone quiet is not: it
    /// expires by its TTL unless it answers or announces itself first.
    pub(super) suspected: bool,
}

/// The suspected nodes of one registry.
#[derive(Debug, Default)]
pub(super) struct Checks {
    /// Waiting for the next round, by instance full name.
    queued: HashMap<String, Target>,
    /// Being asked in the current round.
    asking: HashSet<String>,
    /// Whether the asking thread is running.
    running: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues `target` to be asked, unless it already is, and starts the asking thread if
/// it is not running. Returns at once.
pub(super) fn enqueue(shared: &Arc<Shared>, target: Target) {
    {
        let mut checks = lock(&shared.checks);
        let name = &target.asked.fullname;
        if checks.queued.contains_key(name)
            || checks.asking.contains(name)
            || checks.queued.len() >= MAX_INSTANCES
        {
            return;
        }
        checks.queued.insert(name.clone(), target);
        if checks.running {
            return;
        }
        checks.running = true;
    }
    let worker = Arc::clone(shared);
    if let Err(e) = spawn("micro-mdns-check", move || run(&worker)) {
        // The nodes stay; they still expire by their TTL.
        let mut checks = lock(&shared.checks);
        checks.running = false;
        let dropped = checks.queued.len();
        checks.queued.clear();
        shared
            .check_errors
            .fetch_add(dropped as u64, Ordering::Relaxed);
        tracing::warn!(error = %e, "cannot ask suspected mDNS nodes; keeping them");
    }
}

/// Should the asking thread panic, lets the next suspicion start another.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut checks = lock(&self.0.checks);
            checks.running = false;
            checks.asking.clear();
        }
    }
}

/// Asks queued nodes, round after round, until none is left.
fn run(shared: &Shared) {
    let _running = Running(shared);
    loop {
        let round: Vec<Target> = {
            let mut checks = lock(&shared.checks);
            let names: Vec<String> = checks.queued.keys().take(MAX_ROUND).cloned().collect();
            if names.is_empty() {
                checks.running = false;
                return;
            }
            let round: Vec<Target> = names
                .iter()
                .filter_map(|n| checks.queued.remove(n))
                .collect();
            checks.asking.extend(names);
            round
        };
        let asked: Vec<Asked> = round.iter().map(|t| t.asked.clone()).collect();
        let since = Instant::now();
        match query::ask(&interface_ips(&shared.interfaces), &asked, SUSPECT_WINDOW) {
            Ok(answered) => {
                for target in &round {
                    let answer = answered.contains(&target.asked.fullname);
                    if answer {
                        shared.seen(&target.asked.fullname);
                    }
                    if !target.suspected {
                        shared.quiet_asked.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    shared.suspects_asked.fetch_add(1, Ordering::Relaxed);
                    if answer {
                        shared.suspects_answered.fetch_add(1, Ordering::Relaxed);
                    } else if shared.forget_if_silent(target, since) {
                        shared.suspects_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                shared
                    .check_errors
                    .fetch_add(round.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, nodes = round.len(), "cannot ask suspected mDNS nodes; keeping them");
            }
        }
        let mut checks = lock(&shared.checks);
        for target in &round {
            checks.asking.remove(&target.asked.fullname);
        }
    }
}
