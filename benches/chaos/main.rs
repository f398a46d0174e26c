//! The chaos suite: faults against the worked example (vessel, consignment) running
//! as real release processes, with calls made by an in-process micro client (the
//! generated `ShippingService`). Each scenario prints its figures and whether they
//! met its goal; the suite ends with a table and exits non-zero if any goal was
//! missed. Run with `make chaos` (see RELIABILITY.md): inside a private network
//! namespace, loopback only.
//!
//! `cargo bench --bench chaos -- 1 4b 5` runs only those scenarios.
//!
//! Every child is killed when its guard drops (also on a panic); a scenario that
//! panics or overruns its time fails and the next one runs. A signal to the suite, or
//! the suite overrunning its own cap, kills every child process before exiting.

// A benchmark reports by printing, and fails by panicking or exiting non-zero.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod bad_bytes;
mod etcd_member;
mod faults;
mod mdns_flood;
mod shutdown;
mod support;
mod wire;

#[cfg(feature = "etcd")]
#[path = "../../crates/micro-registry/tests/support/etcd.rs"]
mod etcd_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use support::{Check, Outcome, Report, Suite, kill_all_children};

/// The most one scenario may take.
const SCENARIO_CAP: Duration = Duration::from_secs(120);
/// The most the whole suite may take.
const SUITE_CAP: Duration = Duration::from_secs(600);

type Scenario = fn(Arc<Suite>, Report) -> BoxFuture<'static, ()>;

fn scenarios() -> Vec<(&'static str, &'static str, Scenario)> {
    vec![
        ("1", "a node of two SIGKILLed under steady load", |s, r| {
            Box::pin(faults::node_kill(s, r))
        }),
        ("2", "rolling restart under load (SIGTERM)", |s, r| {
            Box::pin(faults::rolling_restart(s, r))
        }),
        ("3", "the only node SIGKILLed, then a new one", |s, r| {
            Box::pin(faults::only_node(s, r))
        }),
        ("4a", "SIGTERM with NATS down", |s, r| {
            Box::pin(shutdown::nats_down(s, r))
        }),
        ("4b", "SIGTERM with etcd down", |s, r| {
            Box::pin(shutdown::etcd_down(s, r))
        }),
        ("4c", "SIGTERM with calls in flight", |s, r| {
            Box::pin(shutdown::mid_call(s, r))
        }),
        ("5", "bad bytes at a service port", |s, r| {
            Box::pin(bad_bytes::bad_bytes(s, r))
        }),
        (
            "6",
            "hostile mDNS peers and 10,000 malformed packets",
            |s, r| Box::pin(mdns_flood::mdns_flood(s, r)),
        ),
        (
            "7",
            "the etcd member in use killed under load (3 members)",
            |s, r| Box::pin(etcd_member::member_killed(s, r)),
        ),
    ]
}

async fn run_one(suite: Arc<Suite>, id: &str, title: &str, scenario: Scenario) -> Vec<Check> {
    println!("\n== {id}. {title}");
    let started = Instant::now();
    let report = Report::new(id);
    let task = tokio::spawn(scenario(suite, report.clone()));
    let abort = task.abort_handle();
    match tokio::time::timeout(SCENARIO_CAP, task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = if e.is_panic() {
                let panic = e.into_panic();
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "a panic".into())
            } else {
                e.to_string()
            };
            report.fail(
                "panicked",
                &support::clip(&why, 400),
                "the scenario runs to its end",
            );
        }
        Err(_) => {
            abort.abort();
            tokio::time::sleep(Duration::from_millis(200)).await;
            report.fail(
                "timed out",
                &format!("still running after {SCENARIO_CAP:?}"),
                "the scenario runs to its end",
            );
        }
    }
    let swept = kill_all_children();
    if swept > 0 {
        report.note(&format!("{swept} leftover child processes killed"));
    }
    let mut checks = report.take();
    if checks.is_empty() {
        report.fail(
            "no checks",
            "the scenario measured nothing",
            "figures for every goal",
        );
        checks = report.take();
    }
    let verdict = if checks.iter().any(|c| c.outcome == Outcome::Fail) {
        "FAIL"
    } else if checks.iter().all(|c| c.outcome == Outcome::Skip) {
        "SKIP"
    } else {
        "PASS"
    };
    println!(
        "== {id}: {verdict} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    checks
}

/// Goals not met yet, each with why (RELIABILITY.md, "Not met yet"): they are run and
/// reported, and fail the suite only once they are no longer listed here. A goal
/// listed here that is met is reported too, so that the list is kept short.
const KNOWN: &[(&str, &str)] = &[
    (
        "1,000 idle connections",
        "connections that finished the HTTP/2 handshake are closed by the idle timeout (5 min), not within the suite's 10 s; the allocator keeps the memory of closed connections",
    ),
    (
        "vessel memory",
        "mdns-sd keeps a record for each instance name heard, usable or not",
    ),
    (
        "consignment memory",
        "mdns-sd keeps a record for each instance name heard, usable or not",
    ),
];

fn known(check: &Check) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(name, _)| *name == check.name)
        .map(|(_, why)| *why)
}

fn table(checks: &[Check]) {
    println!("\n| # | check | figures | goal | result |");
    println!("|---|---|---|---|---|");
    for c in checks {
        let result = match (c.outcome, known(c)) {
            (Outcome::Pass, _) => "PASS",
            (Outcome::Fail, Some(_)) => "**FAIL** (not met yet)",
            (Outcome::Fail, None) => "**FAIL**",
            (Outcome::Skip, _) => "SKIP",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            c.scenario,
            c.name,
            c.figures.replace('|', "/").replace('\n', " "),
            c.goal,
            result
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let started = Instant::now();
    // cargo bench passes --bench; anything else not starting with - picks scenarios.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let suite = Arc::new(Suite::new());
    println!(
        "chaos suite: pid {}, logs in {}, MICRO_REQUIRE_CHAOS={}",
        std::process::id(),
        suite.dir.display(),
        if support::required() { "1" } else { "unset" }
    );
    let run = {
        let suite = Arc::clone(&suite);
        async move {
            let mut all = Vec::new();
            for (id, title, scenario) in scenarios() {
                if !only.is_empty() && !only.iter().any(|o| o == id || id.starts_with(o.as_str())) {
                    continue;
                }
                all.extend(run_one(Arc::clone(&suite), id, title, scenario).await);
            }
            all
        }
    };
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => std::future::pending().await,
        }
    };
    let checks = tokio::select! {
        checks = run => checks,
        why = stop => {
            let n = kill_all_children();
            eprintln!("chaos: {why}; {n} child processes killed");
            std::process::exit(130);
        }
        () = tokio::time::sleep(SUITE_CAP) => {
            let n = kill_all_children();
            eprintln!("chaos: the suite overran {SUITE_CAP:?}; {n} child processes killed");
            std::process::exit(2);
        }
    };

    table(&checks);
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let skipped = checks.iter().filter(|c| c.outcome == Outcome::Skip).count();
    let passed = checks.len() - failed - skipped;
    let not_yet: Vec<&Check> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail && known(c).is_some())
        .collect();
    for c in &not_yet {
        println!("not met yet: {}: {}", c.name, known(c).unwrap_or_default());
    }
    for c in checks
        .iter()
        .filter(|c| c.outcome == Outcome::Pass && known(c).is_some())
    {
        println!(
            "now met: {} (take it off KNOWN in benches/chaos/main.rs)",
            c.name
        );
    }
    let failed_new = failed - not_yet.len();
    println!(
        "\nchaos: {passed} passed, {failed} failed ({} not met yet, known), {skipped} skipped in {:.0} s",
        not_yet.len(),
        started.elapsed().as_secs_f64()
    );
    if failed_new > 0 {
        println!("logs of the processes: {}", suite.dir.display());
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&suite.dir);
}
