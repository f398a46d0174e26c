//! Scenario 6: hostile mDNS peers and 10,000 malformed packets, on loopback inside
//! the namespace, while the example serves a light load. No crash, no failed call,
//! RSS growth under 20 %.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MdnsRegistry, Registry};
use rand::{Rng, SeedableRng};

use super::faults::setup;
use super::support::{
    CONSIGNMENT, Load, Proc, Report, Suite, VESSEL, book, free_port, mdns, mib, ms, shipping,
    wait_registered, warm_up,
};

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MALFORMED: usize = 10_000;
/// Well-formed instances of a bogus service a hostile peer announces.
const FLOOD: usize = 1_000;
/// Instances claiming the example's services whose TXT does not decode.
const BAD_TXT: usize = 300;

pub async fn mdns_flood(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let mdns_registry = mdns();
    let registry: Arc<dyn Registry> = Arc::new(mdns_registry.clone());
    let mut v = Proc::example(&suite, "vessel", "vessel", free_port(), &[]);
    setup!(report, wait_registered(&*registry, VESSEL, &mut v).await);
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &[]);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);
    for n in 0..200 {
        let _ = book(&client, n).await;
    }
    // A light load: the consignment example keeps every booking in memory, which a
    // heavy load would add to its RSS.
    let load = Load::start(
        &client,
        2,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = [(v.rss_kib(), v.fds()), (c.rss_kib(), c.fds())];
    report.note(&format!(
        "1 vessel, 1 consignment; {}; RSS before: vessel {}, consignment {}",
        load.describe(),
        mib(before[0].0),
        mib(before[1].0)
    ));

    // Hostile peer 1: an mDNS responder announcing impostors (one per service, on a
    // closed port), instances of the example's services with TXT that does not decode,
    // and a thousand instances of a bogus service.
    let started = Instant::now();
    let hostile = tokio::task::spawn_blocking(announce_hostile).await;
    let hostile = match hostile {
        Ok(Ok((daemon, registered))) => {
            report.note(&format!(
                "hostile responder: {registered} instances registered in {}",
                ms(started.elapsed())
            ));
            Some(daemon)
        }
        Ok(Err(e)) => {
            report.fail(
                "hostile responder",
                &e,
                "a hostile mDNS responder can be started",
            );
            None
        }
        Err(e) => {
            report.fail(
                "hostile responder",
                &e.to_string(),
                "a hostile mDNS responder can be started",
            );
            None
        }
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mid = [v.rss_kib(), c.rss_kib()];
    report.note(&format!(
        "3 s later, RSS: vessel {}, consignment {}",
        mib(mid[0]),
        mib(mid[1])
    ));

    // Hostile peer 2: 10,000 malformed packets, half to the group, half to
    // 127.0.0.1:5353, plus goodbyes for nodes that never existed.
    let started = Instant::now();
    let sent = tokio::task::spawn_blocking(send_malformed).await;
    match sent {
        Ok(Ok((sent, failed, from))) => report.note(&format!(
            "{sent} malformed packets sent ({failed} refused by the kernel) from {from} in {}",
            ms(started.elapsed())
        )),
        Ok(Err(e)) => report.fail(
            "malformed packets",
            &e,
            "10,000 malformed packets can be sent",
        ),
        Err(e) => report.fail(
            "malformed packets",
            &e.to_string(),
            "10,000 malformed packets can be sent",
        ),
    }

    // Calls go on for a while after it all; then the figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = [(v.rss_kib(), v.fds()), (c.rss_kib(), c.fds())];
    report.note(&format!(
        "3 s later, RSS: vessel {} ({:+.1} % for the malformed packets alone), consignment {} ({:+.1} %)",
        mib(after[0].0),
        (after[0].0 as f64 - mid[0] as f64) / mid[0].max(1) as f64 * 100.0,
        mib(after[1].0),
        (after[1].0 as f64 - mid[1] as f64) / mid[1].max(1) as f64 * 100.0,
    ));
    let calls = load.stop().await;
    let alive = [v.alive(), c.alive()];
    let lookup = registry
        .get_service(CONSIGNMENT)
        .await
        .map(|s| s.iter().map(|s| s.nodes.len()).sum::<usize>());
    let stats = MdnsRegistry::stats(&mdns_registry);
    if let Some(daemon) = hostile {
        let _ = daemon.shutdown();
    }
    report.note(&format!(
        "this process's mDNS registry afterwards: {stats:?}; consignment nodes known: {}",
        lookup
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string())
    ));
    report.check(
        "no crash",
        &format!("vessel alive {}, consignment alive {}", alive[0], alive[1]),
        "both processes keep running",
        alive[0] && alive[1],
    );
    report.check(
        "calls go on",
        &calls.summary(),
        "0 failed calls",
        calls.failed() == 0 && calls.count() > 0,
    );
    for (i, name) in ["vessel", "consignment"].iter().enumerate() {
        let (b, a) = (before[i].0, after[i].0);
        let growth = (a as f64 - b as f64) / b.max(1) as f64 * 100.0;
        report.check(
            &format!("{name} memory"),
            &format!(
                "RSS {} -> {} ({growth:+.1} %), fds {} -> {}",
                mib(b),
                mib(a),
                before[i].1,
                after[i].1
            ),
            "RSS growth under 20 %",
            growth < 20.0 && a > 0,
        );
    }
}

/// Registers the hostile instances in an mDNS daemon of this process (loopback only).
fn announce_hostile() -> Result<(mdns_sd::ServiceDaemon, usize), String> {
    use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

    let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
    daemon
        .disable_interface(IfKind::All)
        .map_err(|e| e.to_string())?;
    daemon
        .enable_interface(IfKind::LoopbackV4)
        .map_err(|e| e.to_string())?;
    let mut infos = Vec::new();
    for service in [CONSIGNMENT, VESSEL] {
        // A node that refuses connections: its port was free a moment ago.
        let id = format!("{service}-impostor");
        let txt = [
            ("txtvers", "1"),
            ("service", service),
            ("version", "latest"),
            ("id", id.as_str()),
            ("ttl", "90"),
        ];
        infos.push(ServiceInfo::new(
            "_micro._tcp.local.",
            &id,
            "impostor.local.",
            "127.0.0.1",
            free_port(),
            &txt[..],
        ));
    }
    for i in 0..BAD_TXT {
        let service = if i % 2 == 0 { CONSIGNMENT } else { VESSEL };
        let id = format!("{service}-bad-{i}");
        let long = "y".repeat(250);
        let txt: Vec<(&str, &str)> = match i % 6 {
            0 => vec![],
            1 => vec![("txtvers", "1"), ("service", service)],
            2 => vec![("txtvers", "9"), ("service", service), ("id", &id)],
            3 => vec![
                ("txtvers", "1"),
                ("service", service),
                ("id", &id),
                ("meta.0", "{not json"),
            ],
            4 => vec![
                ("txtvers", "1"),
                ("service", service),
                ("id", &id),
                ("ep.3", "[]"),
            ],
            _ => vec![
                ("txtvers", "1"),
                ("service", service),
                ("id", &id),
                ("ttl", "-5"),
                ("ep.0", &long),
            ],
        };
        infos.push(ServiceInfo::new(
            "_micro._tcp.local.",
            &format!("bad-{i}"),
            "bad.local.",
            "127.0.0.1",
            9,
            &txt[..],
        ));
    }
    for i in 0..FLOOD {
        let id = format!("hostile.flood-{i}");
        let txt = [
            ("txtvers", "1"),
            ("service", "hostile.flood"),
            ("version", "latest"),
            ("id", id.as_str()),
            ("ttl", "90"),
        ];
        infos.push(ServiceInfo::new(
            "_micro._tcp.local.",
            &id,
            "flood.local.",
            "127.0.0.1",
            9,
            &txt[..],
        ));
    }
    let mut registered = 0;
    for info in infos {
        let mut info = info.map_err(|e| e.to_string())?;
        info.set_requires_probe(false);
        // The daemon's command queue is bounded: wait for room, a bounded while.
        let mut tries = 0;
        loop {
            match daemon.register(info.clone()) {
                Ok(()) => {
                    registered += 1;
                    break;
                }
                Err(mdns_sd::Error::Again) if tries < 2000 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("register: {e}")),
            }
        }
    }
    Ok((daemon, registered))
}

/// A socket to send from: port 5353 as a real responder would (shared with the
/// registries of this process), else an ephemeral one; multicast out of loopback.
fn sender() -> Result<(UdpSocket, String), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    let _ = socket.set_reuse_address(true);
    let _ = socket.set_reuse_port(true);
    let from = if socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353).into())
        .is_ok()
    {
        "port 5353"
    } else {
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
            .map_err(|e| e.to_string())?;
        "an ephemeral port"
    };
    socket
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .map_err(|e| e.to_string())?;
    socket
        .set_multicast_loop_v4(true)
        .map_err(|e| e.to_string())?;
    Ok((socket.into(), from.to_string()))
}

/// Sends the malformed packets: bursts of 200, 20 ms apart. (sent, refused, from)
fn send_malformed() -> Result<(usize, usize, String), String> {
    let (socket, from) = sender()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let (mut sent, mut failed) = (0, 0);
    for i in 0..MALFORMED {
        let packet = malformed(i, &mut rng);
        let to = if i % 2 == 0 {
            SocketAddrV4::new(GROUP, 5353)
        } else {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5353)
        };
        match socket.send_to(&packet, to) {
            Ok(_) => sent += 1,
            Err(_) => failed += 1,
        }
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Goodbyes (TTL 0) for instances nobody registered: well-formed, but about nothing.
    for i in 0..100 {
        let mut p = header(0x8400, 0, 1);
        p.extend(name(&["_micro", "_tcp", "local"]));
        let target = name(&[&format!("ghost-{i}"), "_micro", "_tcp", "local"]);
        p.extend(rr_head(12, 0, target.len()));
        p.extend(target);
        let _ = socket.send_to(&p, SocketAddrV4::new(GROUP, 5353));
    }
    Ok((sent, failed, from))
}

/// A DNS header: flags, questions, answers.
fn header(flags: u16, questions: u16, answers: u16) -> Vec<u8> {
    let mut h = vec![0, 0];
    h.extend(flags.to_be_bytes());
    h.extend(questions.to_be_bytes());
    h.extend(answers.to_be_bytes());
    h.extend([0, 0, 0, 0]);
    h
}

/// A name from labels.
fn name(labels: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len().min(255) as u8);
        out.extend(l.as_bytes());
    }
    out.push(0);
    out
}

/// Type, class IN, TTL and rdlength of a record.
fn rr_head(rtype: u16, ttl: u32, rdlength: usize) -> Vec<u8> {
    let mut out = rtype.to_be_bytes().to_vec();
    out.extend(1u16.to_be_bytes());
    out.extend(ttl.to_be_bytes());
    out.extend((rdlength.min(0xffff) as u16).to_be_bytes());
    out
}

/// Malformed packet number `i`: eleven kinds in turn.
fn malformed(i: usize, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let instance = format!("x{}", rng.random::<u32>());
    match i % 11 {
        // Random bytes of random length.
        0 => {
            let len = rng.random_range(0..1500);
            (0..len).map(|_| rng.random()).collect()
        }
        // A response header claiming 65,535 answers, and nothing after it.
        1 => header(0x8400, 0, 0xffff),
        // A name that is a compression pointer to itself.
        2 => {
            let mut p = header(0x8400, 0, 1);
            p.extend([0xc0, 0x0c]);
            p.extend(rr_head(12, 120, 2));
            p.extend([0xc0, 0x0c]);
            p
        }
        // A label longer than what follows.
        3 => {
            let mut p = header(0x8400, 0, 1);
            p.extend([63, b'a', b'b', b'c', b'd', b'e']);
            p
        }
        // A PTR for _micro._tcp.local whose rdlength runs past the end.
        4 => {
            let mut p = header(0x8400, 0, 1);
            p.extend(name(&["_micro", "_tcp", "local"]));
            p.extend(rr_head(12, 120, 0xffff));
            p.extend([7, b'i', b'n', b's']);
            p
        }
        // A TXT of an instance whose strings run past the rdata.
        5 => {
            let mut p = header(0x8400, 0, 1);
            p.extend(name(&[&instance, "_micro", "_tcp", "local"]));
            let rdata = [200u8, b't', b'x', b't', b'v', b'e', b'r', b's', b'=', b'1'];
            p.extend(rr_head(16, 120, rdata.len()));
            p.extend(rdata);
            p
        }
        // An SRV of an instance with 2 bytes of rdata.
        6 => {
            let mut p = header(0x8400, 0, 1);
            p.extend(name(&[&instance, "_micro", "_tcp", "local"]));
            p.extend(rr_head(33, 120, 2));
            p.extend([0, 1]);
            p
        }
        // A query whose name points past the end of the packet.
        7 => {
            let mut p = header(0, 1, 0);
            p.extend([0xc0, 0xff, 0, 12, 0, 1]);
            p
        }
        // An A record with 3 bytes of address.
        8 => {
            let mut p = header(0x8400, 0, 1);
            p.extend(name(&["host", "local"]));
            p.extend(rr_head(1, 120, 3));
            p.extend([127, 0, 0]);
            p
        }
        // A name of 130 one-byte labels (longer than 255 bytes).
        9 => {
            let mut p = header(0x8400, 0, 1);
            let labels: Vec<String> = (0..130).map(|_| "a".to_string()).collect();
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            p.extend(name(&refs));
            p.extend(rr_head(12, 120, 0));
            p
        }
        // A TXT of thousands of empty strings, each a key without a value.
        _ => {
            let mut p = header(0x8400, 0, 1);
            p.extend(name(&[&instance, "_micro", "_tcp", "local"]));
            let rdata = vec![0u8; 8000];
            p.extend(rr_head(16, 120, rdata.len()));
            p.extend(rdata);
            p
        }
    }
}
