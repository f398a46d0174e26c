//! One-shot "legacy unicast" DNS-SD queries (RFC 6762 §6.7).
//!
//! A query sent from an ephemeral port (not 5353) is answered by every responder at
//! once, by unicast, with the SRV, TXT and address records alongside the PTR. Multicast
//! answers are rate-limited to one per record per second (RFC 6762 §6), so a browser
//! that starts just after a node announced itself would otherwise hear nothing for up
//! to a second. A new registry sends one of these queries as it starts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, TYPE};

use super::SERVICE_TYPE;

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// Largest packet read; mDNS packets are at most 9000 bytes.
const MAX_PACKET: usize = 9000;
/// Receive buffer asked for the query socket: answers arrive all at once.
const RECV_BUFFER: usize = 1 << 20;
/// Most answering instances kept from one query.
const MAX_ANSWERS: usize = 4096;

/// TXT strings as received: key bytes and, when there is an `=`, value bytes.
pub(crate) type RawTxt = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// An instance as one query's answers describe it.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) port: Option<u16>,
    pub(crate) host: Option<String>,
    pub(crate) txt: Option<RawTxt>,
}

/// What one query heard: instance full name -> records, host name -> addresses, and
/// how many packets could not be parsed.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    pub(crate) instances: HashMap<String, Answer>,
    pub(crate) hosts: HashMap<String, Vec<IpAddr>>,
    pub(crate) malformed: u64,
}

impl Heard {
    /// Complete instances: full name, port, addresses, TXT.
    pub(crate) fn resolved(&self) -> impl Iterator<Item = (&str, u16, &[IpAddr], &RawTxt)> {
        self.instances.iter().filter_map(|(name, answer)| {
            let port = answer.port?;
            let addrs = self.hosts.get(answer.host.as_deref()?)?;
            Some((name.as_str(), port, addrs.as_slice(), answer.txt.as_ref()?))
        })
    }
}

/// Sends a PTR query for `_micro._tcp.local.` from an ephemeral port, out of each of
/// `interfaces` (their IPv4 addresses), and collects answers for `window`, calling `on_packet`
/// with everything heard so far after each answer. Blocking.
pub(crate) fn query(
    interfaces: &[Ipv4Addr],
    window: Duration,
    mut on_packet: impl FnMut(&Heard),
) -> std::io::Result<Heard> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    // Every responder answers at once; room for a burst of answers (best effort).
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER);
    let mut packet = Packet::new_query(0);
    let name = Name::new(SERVICE_TYPE.trim_end_matches('.')).map_err(invalid)?;
    packet.questions.push(Question::new(
        name,
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = packet.build_bytes_vec().map_err(invalid)?;
    // Out of every interface in use: a host (or container) may have no default route
    // for multicast, and its peers may be on any of its networks.
    let mut sent = 0;
    let mut last_error = None;
    for ip in interfaces {
        let result = set_multicast_if(&socket, *ip)
            .and_then(|()| socket.send_to(&bytes, SocketAddrV4::new(MDNS_GROUP, 5353)));
        match result {
            Ok(_) => sent += 1,
            Err(e) => last_error = Some(e),
        }
    }
    if sent == 0 {
        return Err(last_error.unwrap_or_else(|| std::io::Error::other("no interface to query on")));
    }

    let mut heard = Heard::default();
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, _from)) => {
                read_packet(&buf[..n], &mut heard);
                on_packet(&heard);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(heard)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}

/// Sends multicast out of the interface that has `ip` (`IP_MULTICAST_IF`).
fn set_multicast_if(socket: &UdpSocket, ip: Ipv4Addr) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_multicast_if_v4(&ip)
}

/// Adds one packet's records to `heard`; a packet that does not parse is counted.
pub(crate) fn read_packet(bytes: &[u8], heard: &mut Heard) {
    let Ok(packet) = Packet::parse(bytes) else {
        heard.malformed += 1;
        return;
    };
    let suffix = format!(".{}", SERVICE_TYPE.trim_end_matches('.'));
    for record in packet
        .answers
        .iter()
        .chain(packet.additional_records.iter())
    {
        let owner = record.name.to_string();
        match &record.rdata {
            RData::PTR(ptr) if owner == SERVICE_TYPE.trim_end_matches('.') => {
                let instance = ptr.0.to_string();
                if heard.instances.len() < MAX_ANSWERS {
                    heard.instances.entry(instance).or_default();
                }
            }
            RData::SRV(srv) if owner.ends_with(&suffix) => {
                if let Some(answer) = heard.instances.get_mut(&owner) {
                    answer.port = Some(srv.port);
                    answer.host = Some(srv.target.to_string());
                }
            }
            RData::TXT(txt) if owner.ends_with(&suffix) => {
                if let Some(answer) = heard.instances.get_mut(&owner) {
                    answer.txt = Some(
                        txt.iter_raw()
                            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                            .collect(),
                    );
                }
            }
            RData::A(a) => push_addr(heard, owner, IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(aaaa) => push_addr(heard, owner, IpAddr::V6(aaaa.address.into())),
            _ => {}
        }
    }
}

fn push_addr(heard: &mut Heard, host: String, ip: IpAddr) {
    if heard.hosts.len() >= MAX_ANSWERS {
        return;
    }
    let list = heard.hosts.entry(host).or_default();
    if !list.contains(&ip) && list.len() < 16 {
        list.push(ip);
    }
}

/// The first IPv4 (else IPv6) address, lowest first, with `port`.
pub(crate) fn pick_address(addrs: &[IpAddr], port: u16) -> Option<SocketAddr> {
    let mut sorted = addrs.to_vec();
    sorted.sort_by_key(|a| (!a.is_ipv4(), *a));
    sorted.first().map(|ip| SocketAddr::new(*ip, port))
}
