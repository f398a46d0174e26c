//! One-shot "legacy unicast" DNS-SD queries (RFC 6762 §6.7).
//!
//! A query sent from an ephemeral port (not 5353) is answered by every responder at
//! once, by unicast, with the SRV, TXT and address records alongside the PTR. Multicast
//! answers are rate-limited to one per record per second (RFC 6762 §6), so a browser
//! that starts just after a node announced itself would otherwise hear nothing for up
//! to a second. A new registry sends these queries as it starts, and then now and then
//! to learn who is still alive; [`ask`] puts the same kind of question to a few
//! suspected nodes only.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Label, Name, Packet, QCLASS, QTYPE, Question, TYPE};

use super::SERVICE_TYPE;
use super::state::normalize;

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
    /// Instances whose records changed since [`Heard::take_changed`] last ran.
    changed: HashSet<String>,
}

/// One complete instance: full name, port, SRV host, addresses, TXT.
pub(crate) struct Resolved<'a> {
    pub(crate) fullname: &'a str,
    pub(crate) port: u16,
    pub(crate) host: &'a str,
    pub(crate) addrs: &'a [IpAddr],
    pub(crate) txt: &'a RawTxt,
}

impl Heard {
    /// The instance `name`, if all its records were heard.
    pub(crate) fn resolved(&self, name: &str) -> Option<Resolved<'_>> {
        let (fullname, answer) = self.instances.get_key_value(name)?;
        let host = answer.host.as_deref()?;
        Some(Resolved {
            fullname,
            port: answer.port?,
            host,
            addrs: self.hosts.get(host)?,
            txt: answer.txt.as_ref()?,
        })
    }

    /// The instances whose records changed since the last call (so that a burst of
    /// answers is read once each, not once per packet).
    pub(crate) fn take_changed(&mut self) -> Vec<String> {
        self.changed.drain().collect()
    }
}

/// How long a query listens for answers.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// How long to wait for the first answer.
    pub(crate) first: Duration,
    /// After an answer, how long to wait for the next one: three times as long as the
    /// answers so far took to come, within these bounds. Answers come in a burst, and
    /// a round ends once they stop; a busy host, whose answers come late, is waited
    /// for longer.
    pub(crate) quiet: std::ops::RangeInclusive<Duration>,
    /// How many times the question is asked, each time once the answers to the last
    /// one have stopped, on the same socket (so a late answer to an earlier round
    /// still counts).
    pub(crate) rounds: usize,
    /// Never listen past this.
    pub(crate) until: Instant,
}

impl Window {
    /// How long to wait for more after an answer that took `latency` to come.
    fn quiet_after(&self, latency: Duration) -> Duration {
        latency
            .saturating_mul(3)
            .clamp(*self.quiet.start(), *self.quiet.end())
    }
}

/// Sends a PTR query for `_micro._tcp.local.` from an ephemeral port, out of each of
/// `interfaces` (their IPv4 addresses), and collects answers as `window` says,
/// calling `on_packet` with everything heard so far after each answer. Blocking.
pub(crate) fn query(
    interfaces: &[Ipv4Addr],
    window: &Window,
    mut on_packet: impl FnMut(&mut Heard),
) -> std::io::Result<Heard> {
    let mut packet = Packet::new_query(0);
    let name = Name::new(SERVICE_TYPE.trim_end_matches('.')).map_err(invalid)?;
    packet.questions.push(Question::new(
        name,
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = packet.build_bytes_vec().map_err(invalid)?;
    let packets = [bytes];
    let socket = send(interfaces, &packets)?;

    let mut heard = Heard::default();
    let mut buf = vec![0u8; MAX_PACKET];
    // The slowest answer of the round so far, from its question.
    let mut latency: Option<Duration> = None;
    for round in 1..=window.rounds.max(1) {
        let sent = Instant::now();
        if round > 1 {
            resend(&socket, interfaces, &packets);
        }
        let wait = latency.map_or(window.first, |l| window.quiet_after(l));
        let mut deadline = window.until.min(sent + wait);
        while let Some(n) = receive(&socket, &mut buf, deadline)? {
            read_packet(&buf[..n], &mut heard);
            on_packet(&mut heard);
            let now = Instant::now();
            let took = now.duration_since(sent);
            let slowest = latency.map_or(took, |l| l.max(took));
            latency = Some(slowest);
            deadline = window.until.min(now + window.quiet_after(slowest));
        }
        if Instant::now() >= window.until {
            break;
        }
    }
    Ok(heard)
}

/// A node to ask about: its instance's full name (normalized) and the host its SRV
/// record names, when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) fullname: String,
    pub(crate) host: Option<String>,
}

/// Asks the responders of `nodes` directly whether they are there: one legacy unicast
/// query per node, for the SRV record of its instance and the address of its host,
/// sent out of each of `interfaces`. Listens for `window`, or until every node has
/// answered. Returns the full names of the nodes that answered. Blocking.
///
/// Both questions are asked because responders differ: mdns-sd (0.21) keeps its
/// instance names with the dots inside the instance label escaped (`a\.b._micro...`)
/// but reads the names in a question unescaped, so it never answers the SRV question
/// for an instance whose label has a dot in it (micro's node ids do); it does answer
/// for the host, whose name micro derives from the node id without dots.
pub(crate) fn ask(
    interfaces: &[Ipv4Addr],
    nodes: &[Asked],
    window: Duration,
) -> std::io::Result<HashSet<String>> {
    let service_type: Vec<Label<'_>> = SERVICE_TYPE
        .split('.')
        .filter(|l| !l.is_empty())
        .map(|l| Label::new_unchecked(l.as_bytes()))
        .collect();
    let suffix = format!(".{SERVICE_TYPE}");
    let mut packets = Vec::with_capacity(nodes.len());
    // Lower-case names asked about -> the node's full name.
    let mut wanted: HashMap<String, &str> = HashMap::new();
    for node in nodes {
        let mut packet = Packet::new_query(0);
        if let Some(label) = node.fullname.strip_suffix(&suffix) {
            if (1..=63).contains(&label.len()) {
                let mut labels = vec![Label::new_unchecked(label.as_bytes())];
                labels.extend(service_type.iter().cloned());
                packet.questions.push(Question::new(
                    Name::new_with_labels(&labels),
                    QTYPE::TYPE(TYPE::SRV),
                    QCLASS::CLASS(CLASS::IN),
                    false,
                ));
                wanted.insert(node.fullname.to_ascii_lowercase(), &node.fullname);
            }
        }
        if let Some(host) = &node.host {
            if let Ok(name) = Name::new(host.trim_end_matches('.')) {
                packet.questions.push(Question::new(
                    name,
                    QTYPE::TYPE(TYPE::A),
                    QCLASS::CLASS(CLASS::IN),
                    false,
                ));
                wanted.insert(normalize(host).to_ascii_lowercase(), &node.fullname);
            }
        }
        if !packet.questions.is_empty() {
            packets.push(packet.build_bytes_vec().map_err(invalid)?);
        }
    }
    let mut answered = HashSet::new();
    if packets.is_empty() {
        return Ok(answered);
    }
    let socket = send(interfaces, &packets)?;
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; MAX_PACKET];
    while answered.len() < nodes.len() {
        let Some(n) = receive(&socket, &mut buf, deadline)? else {
            break;
        };
        let Ok(packet) = Packet::parse(&buf[..n]) else {
            continue;
        };
        for record in packet
            .answers
            .iter()
            .chain(packet.additional_records.iter())
        {
            // A goodbye (TTL 0) is no sign of life.
            if record.ttl == 0 {
                continue;
            }
            let owner = normalize(&record.name.to_string()).to_ascii_lowercase();
            if let Some(fullname) = wanted.get(&owner) {
                answered.insert((*fullname).to_string());
            }
        }
    }
    Ok(answered)
}

/// Binds an ephemeral port and sends `packets` to the mDNS group out of every
/// interface in `interfaces`: a host (or container) may have no default route for
/// multicast, and its peers may be on any of its networks. Fails when nothing could
/// be sent at all.
fn send(interfaces: &[Ipv4Addr], packets: &[Vec<u8>]) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    // Every responder answers at once; room for a burst of answers (best effort).
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER);
    send_from(&socket, interfaces, packets)?;
    Ok(socket)
}

/// Sends `packets` again from `socket`, out of each of `interfaces`; best effort (the
/// first round was sent, so answers may still come).
fn resend(socket: &UdpSocket, interfaces: &[Ipv4Addr], packets: &[Vec<u8>]) {
    let _ = send_from(socket, interfaces, packets);
}

/// Sends `packets` from `socket` to the mDNS group out of each of `interfaces`,
/// going on past failures; fails only when nothing was sent.
fn send_from(
    socket: &UdpSocket,
    interfaces: &[Ipv4Addr],
    packets: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut sent = 0;
    let mut last_error = None;
    for ip in interfaces {
        if let Err(e) = set_multicast_if(socket, *ip) {
            last_error = Some(e);
            continue;
        }
        for bytes in packets {
            match socket.send_to(bytes, SocketAddrV4::new(MDNS_GROUP, 5353)) {
                Ok(_) => sent += 1,
                Err(e) => last_error = Some(e),
            }
        }
    }
    if sent == 0 {
        return Err(last_error.unwrap_or_else(|| std::io::Error::other("no interface to query on")));
    }
    Ok(())
}

/// Reads one packet into `buf`, waiting until `deadline`: its length, or `None` when
/// the time is up.
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> std::io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(buf) {
            Ok((n, _from)) => return Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            // A signal: try again with what is left of the time.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
    read_records(&packet, heard);
}

/// Adds the records of a parsed `packet` (its answers and additional records) to
/// `heard`.
pub(crate) fn read_records(packet: &Packet<'_>, heard: &mut Heard) {
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
                    heard.instances.entry(instance.clone()).or_default();
                    heard.changed.insert(instance);
                }
            }
            RData::SRV(srv) if owner.ends_with(&suffix) => {
                if let Some(answer) = heard.instances.get_mut(&owner) {
                    answer.port = Some(srv.port);
                    answer.host = Some(srv.target.to_string());
                    heard.changed.insert(owner);
                }
            }
            RData::TXT(txt) if owner.ends_with(&suffix) => {
                if let Some(answer) = heard.instances.get_mut(&owner) {
                    answer.txt = Some(
                        txt.iter_raw()
                            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                            .collect(),
                    );
                    heard.changed.insert(owner);
                }
            }
            RData::A(a) => push_addr(heard, owner, IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(aaaa) => push_addr(heard, owner, IpAddr::V6(aaaa.address.into())),
            _ => {}
        }
    }
}

fn push_addr(heard: &mut Heard, host: String, ip: IpAddr) {
    if heard.hosts.len() >= MAX_ANSWERS && !heard.hosts.contains_key(&host) {
        return;
    }
    let list = heard.hosts.entry(host.clone()).or_default();
    if !list.contains(&ip) && list.len() < 16 {
        list.push(ip);
        // The instances on this host may be complete now.
        for (name, answer) in &heard.instances {
            if answer.host.as_deref() == Some(host.as_str()) {
                heard.changed.insert(name.clone());
            }
        }
    }
}

/// The first IPv4 (else IPv6) address, lowest first, with `port`.
pub(crate) fn pick_address(addrs: &[IpAddr], port: u16) -> Option<SocketAddr> {
    let mut sorted = addrs.to_vec();
    sorted.sort_by_key(|a| (!a.is_ipv4(), *a));
    sorted.first().map(|ip| SocketAddr::new(*ip, port))
}
