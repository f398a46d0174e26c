//! Scenario 4: SIGTERM when a dependency is down (NATS, etcd) and with a call in
//! flight. A process must exit within its grace period (5 s) + 1 s, and a booking in
//! flight when SIGTERM arrives must be answered.
//!
//! "In flight" is made certain, not left to timing: the booking is a hand-made gRPC
//! request whose headers and first half of the body reach the consignment before the
//! signal; the rest of the body is sent a second after it.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use micro_core::registry::Registry;

use super::faults::{pause, setup, workers};
use super::support::{
    CONSIGNMENT, Load, Proc, Report, Suite, VESSEL, book, booking, free_port, mdns, ms, shipping,
    wait_registered, warm_up,
};
use super::wire::{self, CREATE, Open};

/// The server's grace period (micro-core's default) and the allowance beyond it.
const EXIT_LIMIT: Duration = Duration::from_secs(6);
const EXIT_GOAL: &str = "exits within grace (5 s) + 1 s of SIGTERM";
const IN_FLIGHT_GOAL: &str = "the booking in flight at SIGTERM is answered (created)";

/// Starts a booking on `address` and sends the first half of it; the rest is
/// returned, to be sent by [`finish`].
async fn held_booking(address: &str) -> Result<(Open, Vec<u8>), String> {
    let message = prost::Message::encode_to_vec(&booking(4242));
    let whole = wire::frame(&message);
    let half = whole.len() / 2;
    let open = wire::open(address, CREATE, "application/grpc").await?;
    open.body
        .send(Bytes::copy_from_slice(&whole[..half]))
        .await
        .map_err(|_| "the request ended early".to_string())?;
    // Headers and half the body on the wire before anything else happens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if open.reply.is_finished() {
        return Err("answered before the body was complete".into());
    }
    Ok((open, whole[half..].to_vec()))
}

/// Sends the rest of a held booking after `after`, and reads the reply.
async fn finish(open: Open, rest: Vec<u8>, after: Duration) -> Result<String, String> {
    tokio::time::sleep(after).await;
    let sent = open.body.send(Bytes::from(rest)).await;
    drop(open.body);
    let reply = match tokio::time::timeout(Duration::from_secs(12), open.reply).await {
        Ok(Ok(Ok(reply))) => reply,
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no reply within 12 s".into()),
    };
    if sent.is_err() {
        return Err(format!("the rest could not be sent; {}", reply.describe()));
    }
    if reply.grpc_status.as_deref() != Some("0") || reply.body.len() < 5 {
        return Err(reply.describe());
    }
    match <micro_examples::consignment::Response as prost::Message>::decode(&reply.body[5..]) {
        Ok(r) if r.created => Ok(format!(
            "answered: created, vessel {}",
            r.consignment.map(|c| c.vessel_id).unwrap_or_default()
        )),
        Ok(_) => Err("answered created=false".into()),
        Err(e) => Err(format!("undecodable answer: {e}")),
    }
}

/// SIGTERM to `consignment` with a booking held open on it, then to `vessel`; checks
/// both exit times and the booking.
async fn term_with_held_booking(
    report: &Report,
    label: &str,
    consignment: &mut Proc,
    vessel: &mut Proc,
) {
    let held = held_booking(&consignment.address()).await;
    let sent = Instant::now();
    consignment.sigterm();
    let finishing = match held {
        Ok((open, rest)) => Some(tokio::spawn(finish(open, rest, Duration::from_secs(1)))),
        Err(e) => {
            report.fail(
                "booking in flight",
                &format!("could not start it: {e}"),
                IN_FLIGHT_GOAL,
            );
            None
        }
    };
    let exit = consignment.wait_exit(sent).await;
    report.check(
        &format!("consignment exit, {label}"),
        &format!("SIGTERM -> exit in {}", exit.describe()),
        EXIT_GOAL,
        exit.within(EXIT_LIMIT),
    );
    if let Some(finishing) = finishing {
        let outcome = finishing.await.unwrap_or_else(|e| Err(e.to_string()));
        report.check(
            &format!("booking in flight at SIGTERM, {label}"),
            &format!(
                "body completed 1 s after SIGTERM; {}",
                outcome.as_ref().unwrap_or_else(|e| e)
            ),
            IN_FLIGHT_GOAL,
            outcome.is_ok(),
        );
    }
    let exit = vessel.terminate().await;
    report.check(
        &format!("vessel exit, {label}"),
        &format!("SIGTERM -> exit in {}", exit.describe()),
        EXIT_GOAL,
        exit.within(EXIT_LIMIT),
    );
    if !consignment.alive() && !vessel.alive() {
        let tails: Vec<String> = [&*consignment, &*vessel]
            .iter()
            .map(|p| format!("{}: {}", p.name, super::support::clip(&p.log_tail(3), 300)))
            .filter(|s| !s.ends_with(": "))
            .collect();
        if !tails.is_empty() {
            report.note(&format!("last log lines: {}", tails.join(" | ")));
        }
    }
}

/// A few bookings, one after another: their outcome, for the notes.
async fn probe(client: &micro_examples::consignment::ShippingService, n: usize) -> String {
    let mut out = Vec::new();
    for i in 0..n {
        let (took, result) = book(client, 9000 + i).await;
        out.push(match result {
            Ok(()) => format!("ok in {}", ms(took)),
            Err(e) => format!("failed in {} ({})", ms(took), super::support::clip(&e, 80)),
        });
    }
    out.join(", ")
}

/// Scenario 4a: the NATS broker killed, then SIGTERM.
pub async fn nats_down(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment", "nats-server"]) {
        return;
    }
    let nats_port = free_port();
    let mut command = Command::new("nats-server");
    command.args(["-a", "127.0.0.1", "-p", &nats_port.to_string()]);
    let mut nats = Proc::spawn(&suite, "nats-server", nats_port, command);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) || !nats.alive() {
            report.fail(
                "setup",
                &format!("nats-server did not start: {}", nats.log_tail(5)),
                "nats-server starts",
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let env = [
        ("MICRO_BROKER", "nats".to_string()),
        (
            "MICRO_BROKER_ADDRESS",
            format!("nats://127.0.0.1:{nats_port}"),
        ),
    ];
    let registry: Arc<dyn Registry> = Arc::new(mdns());
    let mut v = Proc::example(&suite, "vessel", "vessel", free_port(), &env);
    setup!(report, wait_registered(&*registry, VESSEL, &mut v).await);
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &env);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);
    report.note(&format!(
        "vessel and consignment with MICRO_BROKER=nats (nats-server on 127.0.0.1:{nats_port}); \
         bookings with NATS up: {}",
        probe(&client, 3).await
    ));
    nats.sigkill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.note(&format!(
        "nats-server SIGKILLed; bookings with NATS down: {}",
        probe(&client, 3).await
    ));
    term_with_held_booking(&report, "NATS down", &mut c, &mut v).await;
}

/// Scenario 4b: the only etcd member killed, then SIGTERM.
#[cfg(feature = "etcd")]
pub async fn etcd_down(suite: Arc<Suite>, report: Report) {
    use micro_core::registry::EtcdRegistry;

    if !suite.need(&report, &["vessel", "consignment", "etcd"]) {
        return;
    }
    let Some(mut etcd) = super::etcd_support::EtcdCluster::start(1) else {
        report.skip("etcd is not installed");
        return;
    };
    let env = [
        ("MICRO_REGISTRY", "etcd".to_string()),
        ("MICRO_REGISTRY_ADDRESS", etcd.address_list()),
    ];
    let registry: Arc<dyn Registry> = Arc::new(setup!(report, EtcdRegistry::new(etcd.addresses())));
    let mut v = Proc::example(&suite, "vessel", "vessel", free_port(), &env);
    setup!(report, wait_registered(&*registry, VESSEL, &mut v).await);
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &env);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);
    report.note(&format!(
        "vessel and consignment with MICRO_REGISTRY=etcd (one member, {})",
        etcd.address_list()
    ));
    etcd.kill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.note(&format!(
        "etcd SIGKILLed; bookings with etcd down: {}",
        probe(&client, 3).await
    ));
    term_with_held_booking(&report, "etcd down", &mut c, &mut v).await;
}

#[cfg(not(feature = "etcd"))]
pub async fn etcd_down(_suite: Arc<Suite>, report: Report) {
    not_built(&report);
}

#[cfg(not(feature = "etcd"))]
pub fn not_built(report: &Report) {
    let why = "this bench was built without --features etcd (make chaos builds it with)";
    if super::support::required() {
        report.fail(
            "prerequisites",
            why,
            "the etcd scenarios run (MICRO_REQUIRE_CHAOS=1)",
        );
    } else {
        report.skip(why);
    }
}

/// Scenario 4c: SIGTERM to a consignment and then a vessel with calls in flight, under load,
/// two of each.
pub async fn mid_call(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let registry: Arc<dyn Registry> = Arc::new(mdns());
    let mut va = Proc::example(&suite, "vessel", "vessel-a", free_port(), &[]);
    let mut vb = Proc::example(&suite, "vessel", "vessel-b", free_port(), &[]);
    setup!(report, wait_registered(&*registry, VESSEL, &mut va).await);
    setup!(report, wait_registered(&*registry, VESSEL, &mut vb).await);
    let mut ca = Proc::example(&suite, "consignment", "consignment-a", free_port(), &[]);
    let mut cb = Proc::example(&suite, "consignment", "consignment-b", free_port(), &[]);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut ca).await
    );
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut cb).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);

    let load = Load::start(&client, workers(), pause(), Duration::from_secs(40));
    report.note(&format!(
        "2 vessels, 2 consignments; {}; after 1.5 s consignment-a gets SIGTERM with a \
         booking held open on it, then vessel-a",
        load.describe()
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_consignment = load.in_flight();
    // consignment-a: the held booking, and whatever the load has in flight.
    let held = held_booking(&ca.address()).await;
    let sent = Instant::now();
    ca.sigterm();
    let finishing = match held {
        Ok((open, rest)) => Some(tokio::spawn(finish(open, rest, Duration::from_secs(1)))),
        Err(e) => {
            report.fail(
                "booking in flight",
                &format!("could not start it: {e}"),
                IN_FLIGHT_GOAL,
            );
            None
        }
    };
    let exit = ca.wait_exit(sent).await;
    report.check(
        "consignment exit, calls in flight",
        &format!(
            "SIGTERM -> exit in {} ({at_consignment} load calls in flight at the signal)",
            exit.describe()
        ),
        EXIT_GOAL,
        exit.within(EXIT_LIMIT),
    );
    if let Some(finishing) = finishing {
        let outcome = finishing.await.unwrap_or_else(|e| Err(e.to_string()));
        report.check(
            "booking in flight at SIGTERM, consignment",
            &format!(
                "body completed 1 s after SIGTERM; {}",
                outcome.as_ref().unwrap_or_else(|e| e)
            ),
            IN_FLIGHT_GOAL,
            outcome.is_ok(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // vessel-a: the consignments' calls to it are in flight as it goes.
    let at_vessel = load.in_flight();
    let exit = va.terminate().await;
    report.check(
        "vessel exit, calls in flight",
        &format!(
            "SIGTERM -> exit in {} ({at_vessel} load calls in flight at the signal)",
            exit.describe()
        ),
        EXIT_GOAL,
        exit.within(EXIT_LIMIT),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.stop().await;
    report.check(
        "load across both SIGTERMs",
        &calls.summary(),
        "0 failed calls (none in flight lost; later ones go to the other node)",
        calls.failed() == 0 && calls.count() > 0,
    );
}
