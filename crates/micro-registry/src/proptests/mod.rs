//! Property tests for every parser of outside input in this crate: mDNS TXT records
//! (and the raw mDNS packets they arrive in), and etcd values. Each property runs
//! 10,000 cases; each asserts that nothing panics, that what cannot be read is an
//! error, and that what the matching writer writes reads back equal.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use crate::mdns::txt::{self, TxtError};
use crate::{Endpoint, Node, Service, Value};

const CASES: u32 = 10_000;

/// Characters that matter to the formats: JSON's escapes, TXT's `=`, key
/// separators, control characters, and UTF-8 of every length.
const SPECIAL: &[char] = &[
    'a', 'Z', '0', '9', '.', '-', '/', '=', ' ', '"', '\\', '{', '}', '[', ']', ':', ',', '\0',
    '\n', '\t', '\u{7f}', 'é', '€', '😀', '\u{2028}', '\u{feff}', '\u{fffd}',
];

/// splitmix64. Strings, maps and type trees grow from one generated seed each:
/// generation stays cheap in a debug build (one shrinkable number, not a value tree
/// per character), so 10,000 cases take seconds.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` characters: half from [`SPECIAL`], half any scalar value.
fn seeded_text(seed: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let r = next(seed);
            if r & 1 == 0 {
                SPECIAL[(r >> 1) as usize % SPECIAL.len()]
            } else {
                char::from_u32(((r >> 1) % 0x11_0000) as u32).unwrap_or('\u{fffd}')
            }
        })
        .collect()
}

/// Up to `max` characters.
fn seeded_short(seed: &mut u64, max: usize) -> String {
    let len = (next(seed) % (max as u64 + 1)) as usize;
    seeded_text(seed, len)
}

/// Any text of at most `max` characters.
fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    text_in(0, max)
}

fn text_in(min: usize, max: usize) -> impl Strategy<Value = String> + Clone {
    (min..=max, any::<u64>()).prop_map(|(len, mut seed)| seeded_text(&mut seed, len))
}

/// Text that is not empty.
fn some_text(max: usize) -> impl Strategy<Value = String> + Clone {
    text_in(1, max)
}

/// Any bytes, at most `max` of them.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    (0..=max, any::<u64>())
        .prop_map(|(len, mut seed)| (0..len).map(|_| next(&mut seed).to_le_bytes()[0]).collect())
}

/// Up to `max` entries of short keys and values.
fn metadata(max: usize) -> impl Strategy<Value = HashMap<String, String>> + Clone {
    (0..=max, any::<u64>()).prop_map(|(len, mut seed)| {
        (0..len)
            .map(|_| (seeded_short(&mut seed, 8), seeded_short(&mut seed, 12)))
            .collect()
    })
}

/// A type description with up to two fields a level, `depth` levels deep at most.
fn seeded_value(seed: &mut u64, depth: u32) -> Value {
    let mut value = Value::new(seeded_short(seed, 8), seeded_short(seed, 8));
    if depth > 0 {
        for _ in 0..next(seed) % 3 {
            value.values.push(seeded_value(seed, depth - 1));
        }
    }
    value
}

fn value() -> impl Strategy<Value = Option<Value>> + Clone {
    prop::option::of(any::<u64>().prop_map(|mut seed| seeded_value(&mut seed, 2)))
}

fn endpoint() -> impl Strategy<Value = Endpoint> + Clone {
    (text(16), value(), value(), metadata(2)).prop_map(|(name, request, response, metadata)| {
        Endpoint {
            name,
            request,
            response,
            metadata,
        }
    })
}

fn node() -> impl Strategy<Value = Node> + Clone {
    (some_text(20), some_text(20), metadata(3)).prop_map(|(id, address, metadata)| Node {
        id,
        address,
        metadata,
    })
}

/// A service that every registry accepts: a name, and nodes with an id and an address.
fn service(nodes: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Service> {
    (
        some_text(24),
        text(8),
        metadata(3),
        prop::collection::vec(endpoint(), 0..3),
        prop::collection::vec(node(), nodes),
    )
        .prop_map(|(name, version, metadata, endpoints, nodes)| Service {
            name,
            version,
            metadata,
            endpoints,
            nodes,
        })
}

/// TXT pairs as the decoder takes them.
fn as_pairs(pairs: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
    pairs.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice())))
}

/// What a record that decoded must say: it names a service and a node.
fn assert_usable(decoded: &txt::Decoded) -> Result<(), TestCaseError> {
    prop_assert!(!decoded.service.is_empty());
    prop_assert!(!decoded.id.is_empty());
    prop_assert!(decoded.ttl.is_none_or(|t| t >= Duration::from_secs(1)));
    Ok(())
}

/// Picks one of `items`.
fn pick<T: Copy>(seed: &mut u64, items: &[T]) -> T {
    items[(next(seed) % items.len() as u64) as usize]
}

/// Up to `max` bytes.
fn seeded_bytes(seed: &mut u64, max: usize) -> Vec<u8> {
    let len = next(seed) % (max as u64 + 1);
    (0..len).map(|_| next(seed).to_le_bytes()[0]).collect()
}

/// TXT pairs: the keys micro writes, near misses and any text, in any case; values
/// that micro writes, JSON-ish text, any text and any bytes, or no value at all.
fn txt_pairs() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    const KEYS: &[&str] = &[
        "txtvers", "TXTVERS", "service", "Service", "version", "id", "ID", "ttl", "meta.0",
        "meta.1", "ep.0", "ep.1", "ep.2", "meta", "ep", "meta.", "ep.x", "meta.01", "ep.-1",
    ];
    const VALUES: &[&str] = &[
        "1",
        "2",
        "",
        "0",
        "90",
        "-1",
        "+5",
        "4294967296",
        "{}",
        "[]",
        "null",
        "{\"a\":\"b\"}",
        "[{\"name\":\"x\"}]",
        "[{\"name\":1}]",
        "{\"a\":",
    ];
    (0..16usize, any::<u64>()).prop_map(|(len, mut seed)| {
        let seed = &mut seed;
        (0..len)
            .map(|_| {
                let key = match next(seed) % 3 {
                    0 => pick(seed, KEYS).to_string(),
                    1 => format!("{}.{}", pick(seed, &["meta", "ep"]), next(seed) % 1000),
                    _ => seeded_short(seed, 10),
                };
                let value = match next(seed) % 5 {
                    0 => None,
                    1 => Some(pick(seed, VALUES).as_bytes().to_vec()),
                    2 => Some(seeded_short(seed, 20).into_bytes()),
                    _ => Some(seeded_bytes(seed, 40)),
                };
                (key, value)
            })
            .collect()
    })
}

/// Any keys and any byte strings, up to a TXT string long.
fn txt_byte_strings() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    (0..24usize, any::<u64>()).prop_map(|(len, mut seed)| {
        let seed = &mut seed;
        (0..len)
            .map(|_| {
                let key = seeded_short(seed, 12);
                let value = (next(seed) % 8 != 0).then(|| seeded_bytes(seed, 300));
                (key, value)
            })
            .collect()
    })
}

/// One way to break a record that decoded, and the error it must then give.
#[derive(Debug, Clone)]
enum Breakage {
    Drop(&'static str),
    Set(&'static str, Vec<u8>),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        prop::sample::select(vec!["txtvers", "service", "id"]).prop_map(Breakage::Drop),
        // Anything but "1" as the version.
        bytes(6)
            .prop_filter("not the version", |v| v != b"1")
            .prop_map(|v| Breakage::Set("txtvers", v)),
        // A TTL that is not a positive number of seconds that fits 32 bits.
        prop_oneof![
            "[a-z +-]{0,6}".prop_map(String::into_bytes),
            text(6).prop_map(String::into_bytes),
            Just(b"0".to_vec()),
            Just(b"+0".to_vec()),
            Just(b"4294967296".to_vec()),
            Just(b"-1".to_vec()),
            Just(b" 1".to_vec()),
        ]
        .prop_filter("not a TTL", |v| std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none_or(|n| n == 0))
        .prop_map(|v| Breakage::Set("ttl", v)),
        // A service name or id that is not UTF-8.
        (
            prop::sample::select(vec!["service", "id"]),
            // 0xFF is never UTF-8.
            bytes(8)
        )
            .prop_map(|(k, v)| Breakage::Set(k, [v, vec![0xFF]].concat())),
        // Metadata that is not a JSON object of strings.
        prop::sample::select(vec!["", "{", "[]", "null ", "{\"a\":1}", "{\"a\":\"b\"}x"])
            .prop_map(|v| Breakage::Set("meta.0", v.as_bytes().to_vec())),
    ]
}

/// Whether `err` is the error `breakage` must give.
fn is_expected(breakage: &Breakage, err: &TxtError) -> bool {
    match (breakage, err) {
        (Breakage::Drop(key), TxtError::Missing(missing)) => key == missing,
        (Breakage::Set("txtvers", v), e) => match std::str::from_utf8(v) {
            Err(_) => matches!(e, TxtError::BadValue { key: "txtvers", .. }),
            Ok("") => *e == TxtError::Missing("txtvers"),
            Ok(s) => *e == TxtError::Version(s.to_string()),
        },
        (Breakage::Set(key, _), TxtError::BadValue { key: bad, .. }) => key.starts_with(bad),
        _ => false,
    }
}

/// `txt::encode`'s pairs as a DNS TXT record inside a whole mDNS answer for
/// `instance`, with the PTR, SRV and A records alongside, as a responder sends them.
fn mdns_answer(instance: &str, pairs: &[(String, Vec<u8>)], port: u16, ip: [u8; 4]) -> Vec<u8> {
    use simple_dns::rdata::{A, PTR, RData, SRV, TXT};
    use simple_dns::{CLASS, Name, Packet, PacketFlag, ResourceRecord};

    let service_type = crate::mdns::SERVICE_TYPE.trim_end_matches('.');
    let full = format!("{instance}.{service_type}");
    let host = format!("{instance}.local");
    let mut record = TXT::new();
    for (key, value) in pairs {
        record.add_attribute(key, Some(value)).unwrap();
    }
    let mut packet = Packet::new_reply(0);
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    let rr = |name: &str, rdata: RData<'static>| {
        ResourceRecord::new(Name::new(name).unwrap().into_owned(), CLASS::IN, 120, rdata)
    };
    packet.answers.push(rr(
        service_type,
        RData::PTR(PTR(Name::new(&full).unwrap().into_owned())),
    ));
    packet.additional_records.push(rr(
        &full,
        RData::SRV(SRV {
            priority: 0,
            weight: 0,
            port,
            target: Name::new(&host).unwrap().into_owned(),
        }),
    ));
    packet
        .additional_records
        .push(rr(&full, RData::TXT(record.into_owned())));
    packet.additional_records.push(rr(
        &host,
        RData::A(A {
            address: u32::from_be_bytes(ip),
        }),
    ));
    packet.build_bytes_vec().unwrap()
}

/// TXT pairs as the query path hands them to the decoder (keys that are not UTF-8
/// are skipped, as `State::absorb` skips them).
/// Every instance heard in full: name, port, addresses, TXT.
fn resolved_all(
    heard: &crate::mdns::query::Heard,
) -> Vec<(&str, u16, &[std::net::IpAddr], &crate::mdns::query::RawTxt)> {
    heard
        .instances
        .keys()
        .filter_map(|name| heard.resolved(name))
        .map(|r| (r.fullname, r.port, r.addrs, r.txt))
        .collect()
}

fn raw_pairs(raw: &crate::mdns::query::RawTxt) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
    raw.iter()
        .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, v.as_deref())))
}

/// Found by `txt_what_is_encoded_decodes_equal`: a TTL past `u32::MAX` seconds was
/// written as is, and every reader refused the record.
#[test]
fn txt_ttl_past_32_bits_is_written_readable() {
    let service = Service::new("s").node(Node::new("s-1", "127.0.0.1:1"));
    for ttl in [Duration::from_secs(4_294_967_296), Duration::MAX] {
        let pairs = txt::encode(&service, &service.nodes[0], Some(ttl)).unwrap();
        let decoded = txt::decode(as_pairs(&pairs)).unwrap();
        assert_eq!(decoded.ttl, Some(Duration::from_secs(u64::from(u32::MAX))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    // ---- mDNS TXT records (mdns/txt.rs) ----

    #[test]
    fn txt_arbitrary_pairs_never_panic_and_only_usable_records_decode(
        pairs in txt_pairs(),
    ) {
        if let Ok(decoded) = txt::decode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref()))) {
            assert_usable(&decoded)?;
        }
    }

    #[test]
    fn txt_arbitrary_byte_strings_never_panic(
        pairs in txt_byte_strings(),
    ) {
        if let Ok(decoded) = txt::decode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref()))) {
            assert_usable(&decoded)?;
        }
    }

    #[test]
    fn txt_what_is_encoded_decodes_equal(
        service in service(1..=1),
        ttl in prop::option::of(prop_oneof![
            0u64..200_000,
            u64::from(u32::MAX) - 3..=u64::from(u32::MAX) + 3,
            any::<u64>(),
        ]),
        subsec in 0u32..1_000_000_000,
    ) {
        let node = &service.nodes[0];
        let ttl = ttl.map(|secs| Duration::new(secs, subsec));
        let pairs = match txt::encode(&service, node, ttl) {
            Ok(pairs) => pairs,
            Err(e) => {
                // Only a node too big for one mDNS packet is refused.
                prop_assert!(e.contains("bytes of TXT"), "{}", e);
                return Ok(());
            }
        };
        for (key, value) in &pairs {
            prop_assert!(key.len() + 1 + value.len() <= 255, "{} too long", key);
        }
        let decoded = txt::decode(as_pairs(&pairs)).unwrap();
        // Whole seconds, at least one, at most what 32 bits hold.
        prop_assert_eq!(
            decoded.ttl,
            ttl.map(|t| Duration::from_secs(t.as_secs().clamp(1, u64::from(u32::MAX))))
        );
        let expected = Service {
            metadata: HashMap::new(), // not carried in TXT
            ..service.clone()
        };
        prop_assert_eq!(decoded.into_service(node.address.clone()), expected);
    }

    #[test]
    fn txt_a_broken_record_is_the_matching_error(
        service in service(1..=1),
        breakage in breakage(),
    ) {
        let mut service = service;
        service.nodes[0].metadata.insert("k".into(), "v".into());
        let Ok(mut pairs) = txt::encode(&service, &service.nodes[0], Some(Duration::from_secs(90))) else {
            return Ok(());
        };
        match &breakage {
            Breakage::Drop(key) => pairs.retain(|(k, _)| k != key),
            Breakage::Set(key, value) => {
                for (k, v) in &mut pairs {
                    if k == key {
                        v.clone_from(value);
                    }
                }
            }
        }
        let err = txt::decode(as_pairs(&pairs)).unwrap_err();
        prop_assert!(is_expected(&breakage, &err), "{:?} gave {:?}", breakage, err);
    }

    #[test]
    fn txt_a_missing_or_extra_piece_is_an_error(
        service in service(1..=1),
        extra in any::<bool>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut service = service;
        // Enough endpoints to need several pieces.
        let wide = Endpoint { name: "x".repeat(200), ..Endpoint::default() };
        service.endpoints.extend([wide.clone(), wide]);
        let Ok(mut pairs) = txt::encode(&service, &service.nodes[0], None) else {
            return Ok(());
        };
        let pieces = pairs.iter().filter(|(k, _)| k.starts_with("ep.")).count();
        prop_assert!(pieces >= 2);
        if extra {
            // A piece past the end: the count no longer matches the indexes.
            pairs.push((format!("ep.{}", pieces + 1 + pick.index(8)), b"]".to_vec()));
        } else {
            let gone = format!("ep.{}", pick.index(pieces));
            pairs.retain(|(k, _)| *k != gone);
        }
        let err = txt::decode(as_pairs(&pairs)).unwrap_err();
        let is_chunk_or_json = matches!(err, TxtError::BadChunks("ep") | TxtError::BadValue { key: "ep", .. });
        prop_assert!(is_chunk_or_json, "{:?}", err);
    }

    // ---- raw mDNS packets (mdns/query.rs), where TXT records arrive ----

    #[test]
    fn mdns_arbitrary_packets_never_panic(packet in bytes(600)) {
        let mut heard = crate::mdns::query::Heard::default();
        crate::mdns::query::read_packet(&packet, &mut heard);
        for (_, _, _, raw) in resolved_all(&heard) {
            if let Ok(decoded) = txt::decode(raw_pairs(raw)) {
                assert_usable(&decoded)?;
            }
        }
    }

    #[test]
    fn mdns_answer_carries_the_node_and_damage_never_panics(
        service in service(1..=1),
        instance in "[a-z0-9-]{1,40}",
        port in 1u16..,
        ip in any::<[u8; 4]>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let node = &service.nodes[0];
        let Ok(pairs) = txt::encode(&service, node, Some(Duration::from_secs(30))) else {
            return Ok(());
        };
        let bytes = mdns_answer(&instance, &pairs, port, ip);

        let mut heard = crate::mdns::query::Heard::default();
        crate::mdns::query::read_packet(&bytes, &mut heard);
        prop_assert_eq!(heard.malformed, 0);
        let resolved = resolved_all(&heard);
        prop_assert_eq!(resolved.len(), 1);
        let (_, heard_port, addrs, raw) = resolved[0];
        prop_assert_eq!(heard_port, port);
        prop_assert_eq!(addrs, &[std::net::IpAddr::from(ip)][..]);
        let decoded = txt::decode(raw_pairs(raw)).unwrap();
        let expected = Service { metadata: HashMap::new(), ..service.clone() };
        prop_assert_eq!(decoded.into_service(node.address.clone()), expected);

        // The same answer damaged in a few bytes, and cut short: never a panic.
        let mut damaged = bytes.clone();
        for (at, byte) in &flips {
            let at = at.index(damaged.len());
            damaged[at] = *byte;
        }
        let mut heard = crate::mdns::query::Heard::default();
        crate::mdns::query::read_packet(&damaged, &mut heard);
        crate::mdns::query::read_packet(&bytes[..cut.index(bytes.len())], &mut heard);
        for (_, _, _, raw) in resolved_all(&heard) {
            if let Ok(decoded) = txt::decode(raw_pairs(raw)) {
                assert_usable(&decoded)?;
            }
        }
    }
}

#[cfg(feature = "etcd")]
mod etcd;
