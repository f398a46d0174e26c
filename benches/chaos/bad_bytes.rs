//! Scenario 5: bad bytes at the consignment's port. After each, the next valid call
//! works, and the process's fd count and RSS come back to within 10 % of before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use micro_core::registry::Registry;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;

use super::faults::setup;
use super::support::{
    CONSIGNMENT, Proc, Report, Suite, VESSEL, book, free_port, mdns, mib, ms, shipping,
    wait_registered, warm_up,
};
use super::wire::{self, CREATE, EMPTY_SETTINGS, PREFACE};

/// How long fds and RSS get to come back after an attack.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the server gets to close 1,000 idle connections (they are held open by
/// this side meanwhile).
const IDLE_WAIT: Duration = Duration::from_secs(10);
const IDLE: usize = 1000;

/// fds and RSS of a process at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    rss: u64,
}

impl Usage {
    fn of(p: &Proc) -> Self {
        Self {
            fds: p.fds(),
            rss: p.rss_kib(),
        }
    }

    /// Within 10 % of `before` (a drop is fine).
    fn within(&self, before: &Usage) -> bool {
        (self.fds as f64) <= before.fds as f64 * 1.1 && (self.rss as f64) <= before.rss as f64 * 1.1
    }
}

/// What an attack did, as the attacker saw it.
type Outcome = String;

pub async fn bad_bytes(suite: Arc<Suite>, report: Report) {
    if !suite.need(&report, &["vessel", "consignment"]) {
        return;
    }
    let registry: Arc<dyn Registry> = Arc::new(mdns());
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let address = c.address();
    let start = Usage::of(&c);
    report.note(&format!(
        "1 vessel, 1 consignment (attacked at {address}); at start {} fds, RSS {}; after each \
         attack one booking, then fds and RSS get {} to settle (idle connections: {})",
        start.fds,
        mib(start.rss),
        ms(SETTLE),
        ms(IDLE_WAIT)
    ));

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let random: Vec<u8> = (0..64 * 1024).map(|_| rng.random()).collect();
    let garbage: Vec<u8> = (0..16 * 1024).map(|_| rng.random()).collect();

    let attacks: [&str; 8] = [
        "64 KiB of random bytes",
        "an HTTP/1.1 request",
        "HTTP/2 preface, then 16 KiB of garbage",
        "gRPC length prefix of 2 GiB",
        "a 5 MiB message",
        "invalid protobuf",
        "invalid JSON (application/grpc+json)",
        "1,000 idle connections",
    ];
    for (i, name) in attacks.iter().enumerate() {
        let before = Usage::of(&c);
        let mut held: Vec<tokio::net::TcpStream> = Vec::new();
        let outcome: Outcome = match i {
            0 => wire::raw(&address, &random, Duration::from_secs(3)).await,
            1 => {
                let request = format!(
                    "POST {CREATE} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                );
                wire::raw(&address, request.as_bytes(), Duration::from_secs(3)).await
            }
            2 => {
                let mut bytes = PREFACE.to_vec();
                bytes.extend_from_slice(&garbage);
                wire::raw(&address, &bytes, Duration::from_secs(3)).await
            }
            3 => {
                let mut body = vec![0u8, 0x80, 0, 0, 0];
                body.extend_from_slice(&[0u8; 1024]);
                describe(
                    wire::grpc(
                        &address,
                        CREATE,
                        "application/grpc",
                        vec![Bytes::from(body)],
                    )
                    .await,
                )
            }
            4 => {
                let mut big = super::support::booking(5);
                big.description = "x".repeat(5 * 1024 * 1024);
                let whole = wire::frame(&prost::Message::encode_to_vec(&big));
                let chunks = whole
                    .chunks(64 * 1024)
                    .map(Bytes::copy_from_slice)
                    .collect();
                describe(wire::grpc(&address, CREATE, "application/grpc", chunks).await)
            }
            5 => {
                let body = wire::frame(&[0xff; 32]);
                describe(
                    wire::grpc(
                        &address,
                        CREATE,
                        "application/grpc",
                        vec![Bytes::from(body)],
                    )
                    .await,
                )
            }
            6 => {
                let body = wire::frame(b"{\"description\": \"not closed");
                describe(
                    wire::grpc(
                        &address,
                        CREATE,
                        "application/grpc+json",
                        vec![Bytes::from(body)],
                    )
                    .await,
                )
            }
            _ => {
                let mut refused = 0;
                for n in 0..IDLE {
                    match tokio::net::TcpStream::connect(&address).await {
                        Ok(mut s) => {
                            // Half say nothing; half complete the HTTP/2 preface and
                            // SETTINGS, and then say nothing.
                            if n % 2 == 1 {
                                let _ = s.write_all(PREFACE).await;
                                let _ = s.write_all(EMPTY_SETTINGS).await;
                            }
                            held.push(s);
                        }
                        Err(_) => refused += 1,
                    }
                }
                let peak = Usage::of(&c);
                format!(
                    "{} connections open ({refused} refused); server at {} fds, RSS {}",
                    held.len(),
                    peak.fds,
                    mib(peak.rss)
                )
            }
        };
        // The next valid call.
        let (took, result) = book(&client, 10_000 + i).await;
        // Settle: fds and RSS back within 10 %, polled.
        let wait = if i == 7 { IDLE_WAIT } else { SETTLE };
        let settle_start = Instant::now();
        let mut after = Usage::of(&c);
        while !after.within(&before) && settle_start.elapsed() < wait && c.alive() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = Usage::of(&c);
        }
        let settled_in = settle_start.elapsed();
        let closed_by_server = if held.is_empty() {
            String::new()
        } else {
            let closed = held.iter().filter(|s| closed(s)).count();
            format!(", {closed} of {} closed by the server", held.len())
        };
        drop(held);
        let alive = c.alive();
        let call = match &result {
            Ok(()) => format!("next call ok in {}", ms(took)),
            Err(e) => format!(
                "next call FAILED in {} ({})",
                ms(took),
                super::support::clip(e, 100)
            ),
        };
        let back = after.within(&before);
        report.check(
            name,
            &format!(
                "{outcome}; {call}; fds {} -> {}, RSS {} -> {}{}{closed_by_server}{}",
                before.fds,
                after.fds,
                mib(before.rss),
                mib(after.rss),
                if back {
                    format!(" (back in {})", ms(settled_in))
                } else {
                    format!(" (not back within {})", ms(wait))
                },
                if alive { "" } else { "; the process DIED" }
            ),
            "next call works; fds and RSS within 10 % of before",
            result.is_ok() && back && alive,
        );
        if !alive {
            report.note(&format!("consignment's log:\n{}", c.log_tail(20)));
            return;
        }
        // Whatever this attack left behind settles before the next one is measured.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Usage::of(&c);
    report.note(&format!(
        "overall: fds {} -> {}, RSS {} -> {}",
        start.fds,
        end.fds,
        mib(start.rss),
        mib(end.rss)
    ));
}

fn describe(reply: Result<wire::Reply, String>) -> Outcome {
    match reply {
        Ok(r) => format!("answered {}", r.describe()),
        Err(e) => format!("no gRPC answer: {}", super::support::clip(&e, 100)),
    }
}

/// Whether the server has closed this connection (read to the end of what it sent).
fn closed(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}
