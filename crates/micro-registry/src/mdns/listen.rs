//! A passive listener on the mDNS port: hears goodbyes and announcements on the wire.
//!
//! It is how a registry learns of changes after start-up: a goodbye (TTL 0) removes
//! the node at once, an announcement (a multicast answer carrying an instance's PTR,
//! SRV, TXT and address records, sent when a node registers and again every third
//! of its TTL) adds or updates the node, and any other record of a known instance
//! counts as a sign of life.
//!
//! mdns-sd's browse, which this replaces whenever the port can be shared, costs every
//! registry a scan of its whole cache each time its daemon wakes (each packet, each
//! record's refresh timer) and repeats its question at 1, 3, 7, ... s with every known
//! answer attached: per node, work that grows with the number of nodes, and at
//! start-up a burst that overflows sockets from about a hundred processes on.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Weak;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};
use socket2::{Domain, Protocol, Socket, Type};

use super::SERVICE_TYPE;
use super::query::{self, Heard};
use super::state::Shared;

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// Binds port 5353 beside the mDNS daemon and joins the group on `interfaces`.
pub(super) fn socket(interfaces: &[Ipv4Addr]) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353).into())?;
    let mut joined = 0;
    for ip in interfaces {
        match socket.join_multicast_v4(&MDNS_GROUP, ip) {
            Ok(()) => joined += 1,
            Err(e) => tracing::debug!(%ip, error = %e, "cannot join the mDNS group"),
        }
    }
    if joined == 0 {
        return Err(std::io::Error::other(
            "joined the mDNS group on no interface",
        ));
    }
    // Wake up now and then to notice that the registry is gone.
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(socket.into())
}

/// Reads packets until the registry is dropped. An error reading is logged and the
/// listener carries on after a pause: it forgets nothing either way.
pub(super) fn run(socket: UdpSocket, shared: Weak<Shared>) {
    let mut buf = vec![0u8; 9000];
    let mut failing = false;
    loop {
        let received = socket.recv_from(&mut buf);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match received {
            Ok((n, _)) => {
                failing = false;
                read_packet(&buf[..n], &shared);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "mDNS listener cannot read; retrying");
                    failing = true;
                }
                drop(shared);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Applies the goodbyes, announcements and signs of life in one packet. Anything
/// unparsable is ignored; a malformed instance is counted (as a query's would be).
pub(super) fn read_packet(bytes: &[u8], shared: &Shared) {
    let Ok(packet) = Packet::parse(bytes) else {
        return;
    };
    // Queries carry the records their sender already knows (known-answer lists);
    // those say nothing about whether the node is alive. Only responses count.
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return;
    }
    let service_type = SERVICE_TYPE.trim_end_matches('.');
    let suffix = format!(".{service_type}");
    let (mut ours, mut goodbye) = (false, false);
    for record in packet
        .answers
        .iter()
        .chain(packet.additional_records.iter())
    {
        let owner = record.name.to_string();
        let instance = match &record.rdata {
            RData::PTR(ptr) if owner == service_type => ptr.0.to_string(),
            RData::SRV(_) | RData::TXT(_) if owner.ends_with(&suffix) => owner,
            _ => continue,
        };
        if record.ttl == 0 {
            shared.goodbye(&instance);
            goodbye = true;
        } else {
            shared.seen(&instance);
            ours = true;
        }
    }
    // An announcement: the instances it holds whole are added, or updated when they
    // changed. A packet with a goodbye in it is only that (its other records say
    // nothing new).
    if ours && !goodbye {
        let mut heard = Heard::default();
        query::read_records(&packet, &mut heard);
        shared.absorb(&mut heard);
    }
}
