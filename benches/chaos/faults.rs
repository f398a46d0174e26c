//! Scenarios 1–3: nodes dying and restarting under load (mDNS on loopback).

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::Registry;

use super::support::{
    CONSIGNMENT, Load, Proc, Report, Suite, VESSEL, book, free_port, mdns, ms, percentile,
    shipping, wait_registered, warm_up,
};

/// Workers of the steady load: `CHAOS_WORKERS`, default 4.
pub fn workers() -> usize {
    env_number("CHAOS_WORKERS", 4)
}

/// Pause between one worker's calls: `CHAOS_PAUSE_MS`, default 5.
pub fn pause() -> Duration {
    Duration::from_millis(env_number("CHAOS_PAUSE_MS", 5) as u64)
}

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Unwraps a setup step, or records it as a failed check and ends the scenario.
macro_rules! setup {
    ($report:expr, $step:expr) => {
        match $step {
            Ok(value) => value,
            Err(e) => {
                $report.fail("setup", &e.to_string(), "the examples start and serve");
                return;
            }
        }
    };
}
pub(crate) use setup;

/// Scenario 1: two vessels, one consignment, a steady load; one vessel SIGKILLed midway.
pub async fn node_kill(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let registry: Arc<dyn Registry> = Arc::new(mdns());
    let mut a = Proc::example(&suite, "vessel", "vessel-a", free_port(), &[]);
    let mut b = Proc::example(&suite, "vessel", "vessel-b", free_port(), &[]);
    setup!(report, wait_registered(&*registry, VESSEL, &mut a).await);
    setup!(report, wait_registered(&*registry, VESSEL, &mut b).await);
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &[]);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);

    let load = Load::start(&client, workers(), pause(), Duration::from_secs(30));
    report.note(&format!(
        "2 vessels, 1 consignment; {} for 10 s; vessel-a SIGKILLed at 5 s",
        load.describe()
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // At a moment with bookings in flight (waiting at most half a second for one).
    let waited = Instant::now();
    while load.in_flight() < 2 && waited.elapsed() < Duration::from_millis(500) {
        tokio::task::yield_now().await;
    }
    let in_flight = load.in_flight();
    let killed_at = Instant::now();
    a.sigkill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = load.stop().await;
    let after: Vec<_> = calls.0.iter().filter(|c| c.at >= killed_at).collect();
    let mut after_took: Vec<Duration> = after.iter().map(|c| c.took).collect();
    after_took.sort();
    report.note(&format!(
        "{in_flight} bookings in flight at the kill; after it: {} calls, max latency {}",
        after.len(),
        ms(after_took.last().copied().unwrap_or_default())
    ));
    report.check(
        "a node of two SIGKILLed under load",
        &calls.summary(),
        "0 failed calls",
        calls.failed() == 0 && calls.count() > 0,
    );
    report.check(
        "processes alive",
        &format!(
            "vessel-b alive {}, consignment alive {}",
            b.alive(),
            c.alive()
        ),
        "the survivors keep running",
        b.alive() && c.alive(),
    );
}

/// Scenario 2: both vessels restarted in turn with SIGTERM under load, each back before the
/// next goes.
pub async fn rolling_restart(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let registry: Arc<dyn Registry> = Arc::new(mdns());
    let mut vessels = vec![
        Proc::example(&suite, "vessel", "vessel-a", free_port(), &[]),
        Proc::example(&suite, "vessel", "vessel-b", free_port(), &[]),
    ];
    for v in &mut vessels {
        setup!(report, wait_registered(&*registry, VESSEL, v).await);
    }
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &[]);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);

    let load = Load::start(&client, workers(), pause(), Duration::from_secs(60));
    report.note(&format!(
        "2 vessels, 1 consignment; {}; after 2 s each vessel in turn gets SIGTERM, \
         and a new one (new port) is started and seen registered, plus 1 s, before the next",
        load.describe()
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut steps = Vec::new();
    for (i, label) in ["a", "b"].iter().enumerate() {
        let exit = vessels[i].terminate().await;
        let mut fresh = Proc::example(
            &suite,
            "vessel",
            &format!("vessel-{label}2"),
            free_port(),
            &[],
        );
        let back = wait_registered(&*registry, VESSEL, &mut fresh).await;
        steps.push(format!(
            "vessel-{label}: SIGTERM -> exit {}, new one registered in {}",
            exit.describe(),
            back.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| e.clone())
        ));
        vessels[i] = fresh;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.stop().await;
    for s in &steps {
        report.note(s);
    }
    report.check(
        "rolling restart of both vessels under load",
        &calls.summary(),
        "0 failed calls",
        calls.failed() == 0 && calls.count() > 0,
    );
}

/// Scenario 3: the only consignment node SIGKILLed: calls fail fast; a new one is used at once.
pub async fn only_node(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let registry: Arc<dyn Registry> = Arc::new(mdns());
    let mut v = Proc::example(&suite, "vessel", "vessel", free_port(), &[]);
    setup!(report, wait_registered(&*registry, VESSEL, &mut v).await);
    let mut c = Proc::example(&suite, "consignment", "consignment-1", free_port(), &[]);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);
    for n in 0..20 {
        let _ = book(&client, n).await;
    }
    report.note(
        "1 vessel, 1 consignment (the only node), mDNS with the default TTL (90 s); \
         consignment SIGKILLed, then calls one after another for 2 s (at least 3)",
    );

    c.sigkill();
    let killed_at = Instant::now();
    let mut latencies = Vec::new();
    let mut succeeded = 0;
    let mut errors = std::collections::BTreeSet::new();
    let mut n = 0;
    while (killed_at.elapsed() < Duration::from_secs(2) || latencies.len() < 3)
        && latencies.len() < 200
    {
        n += 1;
        let (took, result) = book(&client, n).await;
        latencies.push(took);
        match result {
            Ok(()) => succeeded += 1,
            Err(e) => {
                errors.insert(super::support::clip(&e, 120));
            }
        }
    }
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    report.check(
        "calls after the only node is SIGKILLed",
        &format!(
            "{} calls, {} failed, latency p50 {} max {} [{}]",
            latencies.len(),
            latencies.len() - succeeded,
            ms(percentile(&latencies, 0.5)),
            ms(max),
            errors.into_iter().take(2).collect::<Vec<_>>().join("; ")
        ),
        "every call fails, each in <= 100 ms",
        succeeded == 0 && max <= Duration::from_millis(100),
    );

    // A new node: how soon after it is registered does a call succeed? The client
    // keeps calling, one call after another; an observer registry of its own notes
    // when the new node is seen.
    let observer = mdns();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let caller = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 1_000;
            while started.elapsed() < Duration::from_secs(20) {
                n += 1;
                let at = Instant::now();
                let (took, result) = book(&client, n).await;
                if result.is_ok() {
                    return Some((at, at + took));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        })
    };
    let mut fresh = Proc::example(&suite, "consignment", "consignment-2", port, &[]);
    let started = Instant::now();
    let registered_at = loop {
        if let Ok(found) = observer.get_service(CONSIGNMENT).await
            && found
                .iter()
                .flat_map(|s| s.nodes.iter())
                .any(|n| n.address == address)
        {
            break Some(Instant::now());
        }
        if started.elapsed() > Duration::from_secs(15) || !fresh.alive() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let first_ok = caller.await.ok().flatten();
    match (registered_at, first_ok) {
        (Some(registered), Some((sent, done))) => {
            let delay = done.saturating_duration_since(registered);
            report.check(
                "a new node comes back",
                &format!(
                    "registered {} after start; first successful call done {} after it \
                     (that call was sent {} {} it registered)",
                    ms(registered - started),
                    ms(delay),
                    ms(if sent > registered {
                        sent - registered
                    } else {
                        registered - sent
                    }),
                    if sent > registered { "after" } else { "before" }
                ),
                "calls succeed within 1 s of the node registering",
                delay <= Duration::from_secs(1),
            );
        }
        (registered, ok) => report.fail(
            "a new node comes back",
            &format!(
                "registered: {}, a call succeeded: {} (within 20 s); its log:\n{}",
                registered.is_some(),
                ok.is_some(),
                fresh.log_tail(10)
            ),
            "calls succeed within 1 s of the node registering",
        ),
    }
}
