//! Property tests for every parser of outside input in this crate: go-micro error
//! JSON, `grpc-timeout`, the brokers' envelopes (NATS JSON, the registry broker's
//! `Delivery` protobuf) and typed event bodies. Each property runs 10,000 cases; each
//! asserts that nothing panics, that what cannot be read is an error, and that what
//! the matching writer writes reads back equal.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tonic::Code;

use crate::Error;

const CASES: u32 = 10_000;

/// Characters that matter to the formats: JSON's escapes, separators, control
/// characters, and UTF-8 of every length.
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

/// Any bytes, at most `max` of them.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    (0..=max, any::<u64>())
        .prop_map(|(len, mut seed)| (0..len).map(|_| next(&mut seed).to_le_bytes()[0]).collect())
}

/// Up to `max` headers of short keys and values.
fn header(max: usize) -> impl Strategy<Value = HashMap<String, String>> + Clone {
    (0..=max, any::<u64>()).prop_map(|(len, mut seed)| {
        (0..len)
            .map(|_| (seeded_short(&mut seed, 8), seeded_short(&mut seed, 12)))
            .collect()
    })
}

/// The HTTP-style codes of the table in `error.rs`.
const TABLE: [i32; 12] = [400, 401, 403, 404, 408, 409, 412, 429, 499, 500, 501, 503];

/// JSON that looks like an error: its field names (and near misses) with values of
/// any type, numbers past `i32` included; sometimes with whitespace around, garbage
/// after, or cut short.
fn error_like_json() -> impl Strategy<Value = String> + Clone {
    use serde_json::Value as J;
    const KEYS: &[&str] = &["id", "code", "detail", "status", "Code", "ID"];
    any::<u64>().prop_map(|mut seed| {
        let seed = &mut seed;
        let fields: serde_json::Map<String, J> = (0..next(seed) % 6)
            .map(|_| {
                let key = if next(seed) % 5 == 0 {
                    seeded_short(seed, 4)
                } else {
                    KEYS[(next(seed) % KEYS.len() as u64) as usize].to_string()
                };
                let value = match next(seed) % 10 {
                    0 => J::Null,
                    1 => J::Bool(next(seed) % 2 == 0),
                    2 => J::from(next(seed) as i32),
                    3 => J::from(TABLE[(next(seed) % TABLE.len() as u64) as usize]),
                    4 => J::from(0),
                    5 => J::from(next(seed) as i64),
                    6 => J::from(f64::from_bits(next(seed))),
                    7 => J::Array(vec![]),
                    8 => J::Object(serde_json::Map::new()),
                    _ => J::String(seeded_short(seed, 10)),
                };
                (key, value)
            })
            .collect();
        let s = J::Object(fields).to_string();
        match next(seed) % 6 {
            0 => format!(" {s}\n"),
            1 => format!("{s}{}", seeded_short(seed, 3)),
            2 => {
                let mut end = (next(seed) % (s.len() as u64 + 1)) as usize;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            }
            _ => s,
        }
    })
}

fn any_error(code: impl Strategy<Value = i32>) -> impl Strategy<Value = Error> {
    (text(12), code, text(16), text(8)).prop_map(|(id, code, detail, status)| Error {
        id,
        code,
        detail,
        status,
    })
}

// ---- the registry broker's Delivery, as any other sender would lay it out ----

/// The wire shape of `broker::registry::Delivery`, written independently: tags 1-4.
#[derive(Clone, PartialEq, prost::Message)]
struct WireDelivery {
    #[prost(string, tag = "1")]
    subscriber: String,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(map = "string, string", tag = "3")]
    header: HashMap<String, String>,
    #[prost(bytes = "vec", tag = "4")]
    body: Vec<u8>,
}

fn wire_delivery() -> impl Strategy<Value = WireDelivery> {
    (text(12), text(12), header(4), bytes(64)).prop_map(|(subscriber, topic, header, body)| {
        WireDelivery {
            subscriber,
            topic,
            header,
            body,
        }
    })
}

// ---- typed events ----

/// An event message with a JSON form, as generated code has.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Shipped {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int64, tag = "2")]
    weight: i64,
    #[prost(string, repeated, tag = "3")]
    containers: Vec<String>,
    #[prost(bool, tag = "4")]
    urgent: bool,
}
crate::json_message!(Shipped);

fn shipped() -> impl Strategy<Value = Shipped> {
    (
        text(12),
        any::<i64>(),
        prop::collection::vec(text(6), 0..4),
        any::<bool>(),
    )
        .prop_map(|(id, weight, containers, urgent)| Shipped {
            id,
            weight,
            containers,
            urgent,
        })
}

/// How a body is labelled: `Some(json)` for a `Content-Type` that says JSON or not,
/// `None` for no `Content-Type` at all (protobuf).
fn content_type() -> impl Strategy<Value = (String, Option<String>)> {
    let key = prop::sample::select(vec!["Content-Type", "content-type", "CONTENT-TYPE"]);
    let value = prop::sample::select(vec![
        "application/json",
        "application/json; charset=utf-8",
        "text/json",
        "application/protobuf",
        "application/x-protobuf",
        "application/octet-stream",
        "",
    ]);
    (key, prop::option::of(value)).prop_map(|(k, v)| (k.to_string(), v.map(str::to_string)))
}

/// Runs a typed handler for `Shipped` on one event; returns its result and what the
/// handler was given (message and metadata), if it was called.
fn run_typed(
    event: crate::broker::Event,
) -> (
    Result<(), crate::broker::BrokerError>,
    Option<(Shipped, crate::Metadata)>,
) {
    let seen = Arc::new(Mutex::new(None));
    let handler = crate::event::typed_handler({
        let seen = Arc::clone(&seen);
        move |ctx: crate::Context, message: Shipped| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = Some((message, ctx.metadata().clone()));
                Ok(())
            }
        }
    });
    let result = futures::executor::block_on(handler(event));
    let seen = seen.lock().unwrap().take();
    (result, seen)
}

fn event(header: HashMap<String, String>, body: Vec<u8>) -> crate::broker::Event {
    crate::broker::Event {
        topic: "shipped".into(),
        message: crate::broker::Message { header, body },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    // ---- go-micro error JSON (error.rs) ----

    #[test]
    fn error_parse_of_any_text_has_a_code(text in text(40)) {
        let err = Error::parse(&text);
        prop_assert_ne!(err.code, 0);
    }

    #[test]
    fn error_parse_of_error_like_json_has_a_code(json in error_like_json()) {
        let err = Error::parse(&json);
        prop_assert_ne!(err.code, 0);
        // Not error JSON: a 500 whose detail is the text.
        if serde_json::from_str::<Error>(&json).is_err() {
            prop_assert_eq!(err, Error::new("", json, 500));
        }
    }

    #[test]
    fn error_what_is_written_parses_back_equal(err in any_error(any::<i32>().prop_filter("a code", |c| *c != 0))) {
        prop_assert_eq!(Error::parse(&err.to_string()), err);
    }

    #[test]
    fn error_from_any_status_has_a_positive_code(
        code in any::<i32>(),
        message in prop_oneof![text(30), error_like_json()],
    ) {
        let status = tonic::Status::new(Code::from(code), message.clone());
        let err = Error::from(status);
        prop_assert!(err.code > 0, "{:?}", err);
        if err.id == "go.micro.client" && err.detail == message {
            prop_assert_eq!(err.code, crate::error::http_code(Code::from(code)));
        }
    }

    #[test]
    fn error_through_a_status_and_back_is_equal_for_table_codes(
        err in any_error(prop::sample::select(TABLE.to_vec())),
    ) {
        let status = tonic::Status::from(err.clone());
        prop_assert_ne!(status.code(), Code::Unknown);
        prop_assert_eq!(crate::error::http_code(status.code()), err.code);
        prop_assert_eq!(Error::from(status), err);
    }

    #[test]
    fn error_through_a_status_and_back_is_equal_for_any_positive_code(
        err in any_error(1..=i32::MAX),
    ) {
        prop_assert_eq!(Error::from(tonic::Status::from(err.clone())), err);
    }

    // ---- grpc-timeout (grpc_timeout.rs) ----

    #[test]
    fn grpc_timeout_parse_of_any_text_accepts_only_the_grammar(
        text in prop_oneof![text(12), "[0-9]{0,10}[HMSmunhs]?", "[0-9+ -]{0,9}[HMSmun]"],
    ) {
        let well_formed = text.len() >= 2
            && text.len() <= 9
            && text.is_char_boundary(text.len() - 1)
            && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && matches!(&text[text.len() - 1..], "H" | "M" | "S" | "m" | "u" | "n");
        prop_assert_eq!(crate::grpc_timeout::parse(&text).is_some(), well_formed, "{:?}", text);
    }

    #[test]
    fn grpc_timeout_parse_reads_every_unit(n in 0u64..100_000_000, width in 0usize..8, unit in 0usize..6) {
        let digits = format!("{n:0width$}");
        prop_assume!(digits.len() <= 8);
        let (suffix, expected) = [
            ("H", Duration::from_secs(n * 3600)),
            ("M", Duration::from_secs(n * 60)),
            ("S", Duration::from_secs(n)),
            ("m", Duration::from_millis(n)),
            ("u", Duration::from_micros(n)),
            ("n", Duration::from_nanos(n)),
        ][unit];
        prop_assert_eq!(crate::grpc_timeout::parse(&format!("{digits}{suffix}")), Some(expected));
    }

    #[test]
    fn grpc_timeout_encoded_reads_back_within_a_millisecond(
        // Up to 100,000,000 ms (about 27.8 hours), where whole milliseconds still fit.
        nanos in prop_oneof![0u64..2_000_000, 0u64..100_000_000_000_000],
    ) {
        let left = Duration::from_nanos(nanos);
        let value = crate::grpc_timeout::encode(left);
        let read = crate::grpc_timeout::parse(value.to_str().unwrap()).unwrap();
        prop_assert!(read <= left, "{:?} read as {:?}", left, read);
        prop_assert!(left - read < Duration::from_millis(1), "{:?} read as {:?}", left, read);
    }

    #[test]
    fn grpc_timeout_encoded_long_reads_back_never_longer(
        secs in prop_oneof![100_000u64..1_000_000, any::<u64>()],
        subsec in 0u32..1_000_000_000,
    ) {
        let left = Duration::new(secs, subsec);
        let value = crate::grpc_timeout::encode(left);
        let read = crate::grpc_timeout::parse(value.to_str().unwrap()).unwrap();
        prop_assert!(read <= left, "{:?} read as {:?}", left, read);
        // Whole hours below the cap of 99,999,999 hours.
        if secs < 99_999_999 * 3600 {
            prop_assert!(left - read < Duration::from_secs(3600), "{:?} read as {:?}", left, read);
        }
    }

    // ---- the registry broker's Delivery (broker/registry.rs) ----

    #[test]
    fn delivery_of_any_bytes_never_panics_and_reencodes_equal(raw in bytes(200)) {
        use prost::Message as _;
        if let Ok(delivery) = crate::broker::registry::Delivery::decode(raw.as_slice()) {
            let again = crate::broker::registry::Delivery::decode(delivery.encode_to_vec().as_slice());
            prop_assert_eq!(again, Ok(delivery));
        }
    }

    #[test]
    fn delivery_as_written_reads_back_equal(wire in wire_delivery()) {
        use prost::Message as _;
        let delivery = crate::broker::registry::Delivery::decode(wire.encode_to_vec().as_slice()).unwrap();
        let back = WireDelivery::decode(delivery.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(back, wire);
    }

    #[test]
    fn delivery_damaged_is_an_error(
        wire in wire_delivery(),
        field in 1u8..=3,
        // 0xFF is never UTF-8.
        bad in bytes(7).prop_map(|b| [vec![0xFF], b].concat()),
        cut in 1usize..16,
    ) {
        use prost::Message as _;
        type Delivery = crate::broker::registry::Delivery;
        let good = wire.encode_to_vec();
        // A string field (or a header key) that is not UTF-8.
        let mut invalid = good.clone();
        match field {
            1 | 2 => invalid.push((field << 3) | 2),
            // A header entry whose key is not UTF-8.
            _ => {
                invalid.push((3 << 3) | 2);
                invalid.push(u8::try_from(bad.len() + 2).unwrap());
                invalid.push((1 << 3) | 2);
            }
        }
        invalid.push(u8::try_from(bad.len()).unwrap());
        invalid.extend_from_slice(&bad);
        prop_assert!(Delivery::decode(invalid.as_slice()).is_err());
        // A body that claims more bytes than arrive.
        let mut short = good;
        short.push((4 << 3) | 2);
        short.push(u8::try_from(cut + 8).unwrap());
        short.extend(std::iter::repeat_n(0u8, cut));
        prop_assert!(Delivery::decode(short.as_slice()).is_err());
        // It has no JSON form: reading one is always an error.
        let json = serde_json::to_vec(&serde_json::json!({"subscriber": wire.subscriber})).unwrap();
        prop_assert!(<Delivery as crate::Message>::read_json(&mut json.as_slice()).is_err());
    }

    // ---- typed events (event.rs) ----

    #[test]
    fn event_as_published_reaches_the_handler_equal(
        message in shipped(),
        (key, value) in content_type(),
        extra in header(3),
    ) {
        use prost::Message as _;
        let json = value.as_deref().is_some_and(|v| v.contains("json"));
        let body = if json {
            serde_json::to_vec(&message).unwrap()
        } else {
            message.encode_to_vec()
        };
        let mut header: HashMap<String, String> = extra
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
            .collect();
        if let Some(value) = value {
            header.insert(key, value);
        }
        let (result, seen) = run_typed(event(header.clone(), body));
        prop_assert_eq!(result, Ok(()));
        let (got, metadata) = seen.unwrap();
        prop_assert_eq!(got, message);
        for (k, v) in &header {
            // The last of keys equal but for case wins; every key is there.
            prop_assert!(metadata.get(k).is_some(), "{} missing", k);
            if header.keys().filter(|o| o.eq_ignore_ascii_case(k)).count() == 1 {
                prop_assert_eq!(metadata.get(k), Some(v.as_str()));
            }
        }
    }

    #[test]
    fn event_of_any_body_is_delivered_only_when_it_decodes(
        body in prop_oneof![
            bytes(64),
            text(20).prop_map(String::into_bytes),
            error_like_json().prop_map(String::into_bytes),
            shipped().prop_map(|m| serde_json::to_vec(&m).unwrap()),
        ],
        (key, value) in content_type(),
    ) {
        use prost::Message as _;
        let json = value.as_deref().is_some_and(|v| v.contains("json"));
        let direct: Option<Shipped> = if json {
            serde_json::from_slice(&body).ok()
        } else {
            Shipped::decode(body.as_slice()).ok()
        };
        let header = value.map(|v| (key, v)).into_iter().collect();
        let (result, seen) = run_typed(event(header, body));
        match direct {
            Some(expected) => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(seen.map(|(m, _)| m), Some(expected));
            }
            None => {
                let is_handler_error = matches!(result, Err(crate::broker::BrokerError::Handler(_)));
                prop_assert!(is_handler_error, "{:?}", result);
                prop_assert!(seen.is_none());
            }
        }
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use crate::broker::nats::{decode, encode};

    /// Payloads shaped like go-micro's envelope, with any field types.
    fn envelope_like() -> impl Strategy<Value = Vec<u8>> + Clone {
        use serde_json::Value as J;
        let b64 = bytes(24).prop_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        });
        let body = prop_oneof![
            b64.clone().prop_map(J::String),
            // Base64 with a character changed or dropped: usually not base64.
            (b64, any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, at, c)| {
                let mut chars: Vec<char> = s.chars().collect();
                if !chars.is_empty() {
                    let at = at.index(chars.len());
                    chars[at] = c;
                }
                J::String(chars.into_iter().collect())
            }),
            text(8).prop_map(J::String),
            Just(J::Null),
            any::<i64>().prop_map(J::from),
            Just(J::Array(vec![])),
        ];
        let header = prop_oneof![
            header(3).prop_map(|h| serde_json::to_value(h).unwrap()),
            prop::collection::vec(
                (
                    text(4),
                    prop_oneof![
                        Just(J::Null),
                        any::<i32>().prop_map(J::from),
                        text(4).prop_map(J::String)
                    ]
                ),
                0..3
            )
            .prop_map(|f| J::Object(f.into_iter().collect())),
            Just(J::Null),
            text(4).prop_map(J::String),
        ];
        let key = |name: &'static str| {
            prop_oneof![Just(name.to_string()), Just(name.to_lowercase()), text(3)]
        };
        (
            prop::option::of((key("Header"), header)),
            prop::option::of((key("Body"), body)),
        )
            .prop_map(|(h, b)| {
                let fields: serde_json::Map<String, J> = h.into_iter().chain(b).collect();
                serde_json::to_vec(&J::Object(fields)).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn nats_envelope_of_any_bytes_never_panics(payload in prop_oneof![bytes(100), envelope_like()]) {
            if let Ok(message) = decode(&payload) {
                // What was read is written back the same.
                prop_assert_eq!(decode(&encode(&message)), Ok(message));
            }
        }

        #[test]
        fn nats_envelope_body_that_is_not_base64_is_an_error(
            header in header(3),
            body in text(12),
        ) {
            use base64::Engine as _;
            let payload = serde_json::to_vec(&serde_json::json!({"Header": header, "Body": body})).unwrap();
            let base64 = base64::engine::general_purpose::STANDARD.decode(&body);
            match decode(&payload) {
                Ok(message) => {
                    prop_assert_eq!(Ok(message.body), base64);
                    prop_assert_eq!(message.header, header);
                }
                Err(e) => {
                    prop_assert!(base64.is_err());
                    prop_assert!(e.contains("base64"), "{}", e);
                }
            }
        }

        #[test]
        fn nats_envelope_as_written_reads_back_equal(header in header(4), body in bytes(128)) {
            let message = crate::broker::Message { header, body };
            prop_assert_eq!(decode(&encode(&message)), Ok(message));
        }
    }
}
