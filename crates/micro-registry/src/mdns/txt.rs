//! micro's TXT record layout: how one node of a service is written into DNS-SD TXT
//! key/value pairs, and read back from whatever arrives off the network.
//!
//! | key | value |
//! |---|---|
//! | `txtvers` | `1` |
//! | `service` | the service name, e.g. `go.micro.srv.vessel` |
//! | `version` | the service version, e.g. `latest` |
//! | `id` | the node id |
//! | `ttl` | seconds the node lives without a sign of life (from the registration's TTL; optional) |
//! | `meta.0`, `meta.1`, ... | the node metadata as a JSON object, cut into pieces |
//! | `ep.0`, `ep.1`, ... | the endpoints as a JSON array (go-micro's `Endpoint` JSON), cut into pieces |
//!
//! A TXT string holds at most 255 bytes, so the JSON values are cut into pieces of at
//! most [`CHUNK`] bytes and joined in index order when read. Empty metadata and
//! endpoint lists are left out.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Endpoint, Node, Service};

/// The layout version written in `txtvers`.
pub(crate) const TXT_VERSION: &str = "1";
/// Bytes of JSON per TXT string (255 less room for the key and `=`).
pub(crate) const CHUNK: usize = 240;
/// The most TXT bytes one node may take. A whole mDNS answer must fit one packet
/// (about 9 KB), and the SRV, A and PTR records need room too.
pub const MAX_TXT_BYTES: usize = 6000;
/// The most pieces read for one value; more marks the record as hostile.
const MAX_CHUNKS: usize = MAX_TXT_BYTES / 8;

/// Why a TXT record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TxtError {
    /// A required key is absent or empty.
    #[error("missing key {0:?}")]
    Missing(&'static str),
    /// A value is not valid UTF-8 or not valid JSON of the right shape.
    #[error("bad value for {key:?}: {reason}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Pieces of a cut value are missing or too many.
    #[error("bad pieces for {0:?}")]
    BadChunks(&'static str),
    /// The layout version is not one this code reads.
    #[error("unsupported txtvers {0:?}")]
    Version(String),
}

/// Writes one node of `service` as TXT pairs. Fails when they would not fit an mDNS packet.
pub(crate) fn encode(
    service: &Service,
    node: &Node,
    ttl: Option<Duration>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut pairs = vec![
        ("txtvers".to_string(), TXT_VERSION.as_bytes().to_vec()),
        ("service".to_string(), service.name.as_bytes().to_vec()),
        ("version".to_string(), service.version.as_bytes().to_vec()),
        ("id".to_string(), node.id.as_bytes().to_vec()),
    ];
    if let Some(ttl) = ttl {
        // At most what the reader takes (32 bits, 136 years): longer is the same as that.
        let secs = ttl.as_secs().clamp(1, u64::from(u32::MAX));
        pairs.push(("ttl".to_string(), secs.to_string().into_bytes()));
    }
    for (key, value) in &pairs {
        if key.len() + 1 + value.len() > 255 {
            return Err(format!(
                "{key} is longer than a TXT string allows (255 bytes)"
            ));
        }
    }
    if !node.metadata.is_empty() {
        let json = serde_json::to_vec(&node.metadata).map_err(|e| e.to_string())?;
        push_chunks(&mut pairs, "meta", &json);
    }
    if !service.endpoints.is_empty() {
        let json = serde_json::to_vec(&service.endpoints).map_err(|e| e.to_string())?;
        push_chunks(&mut pairs, "ep", &json);
    }
    let total: usize = pairs.iter().map(|(k, v)| 1 + k.len() + 1 + v.len()).sum();
    if total > MAX_TXT_BYTES {
        return Err(format!(
            "node metadata and endpoints take {total} bytes of TXT; mDNS allows {MAX_TXT_BYTES}"
        ));
    }
    Ok(pairs)
}

fn push_chunks(pairs: &mut Vec<(String, Vec<u8>)>, prefix: &str, bytes: &[u8]) {
    for (index, piece) in bytes.chunks(CHUNK).enumerate() {
        pairs.push((format!("{prefix}.{index}"), piece.to_vec()));
    }
}

/// What a TXT record says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) id: String,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) ttl: Option<Duration>,
}

impl Decoded {
    /// The node as a one-node service, reachable at `address`.
    pub(crate) fn into_service(self, address: String) -> Service {
        let mut node = Node::new(self.id, address);
        node.metadata = self.metadata;
        Service {
            name: self.service,
            version: self.version,
            metadata: HashMap::new(),
            endpoints: self.endpoints,
            nodes: vec![node],
        }
    }
}

/// Reads TXT pairs (keys as received, values as raw bytes). Never panics.
pub(crate) fn decode<'a, I>(pairs: I) -> Result<Decoded, TxtError>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut fields: HashMap<String, &[u8]> = HashMap::new();
    let mut total = 0usize;
    for (key, value) in pairs {
        let value = value.unwrap_or_default();
        total = total.saturating_add(key.len() + value.len());
        if total > MAX_TXT_BYTES * 2 {
            return Err(TxtError::BadChunks("record"));
        }
        // DNS-SD keys are case-insensitive; the first occurrence wins (RFC 6763 6.4).
        fields.entry(key.to_ascii_lowercase()).or_insert(value);
    }
    let text = |key: &'static str| -> Result<String, TxtError> {
        let bytes = fields.get(key).copied().unwrap_or_default();
        let s = std::str::from_utf8(bytes).map_err(|e| TxtError::BadValue {
            key,
            reason: e.to_string(),
        })?;
        if s.is_empty() {
            return Err(TxtError::Missing(key));
        }
        Ok(s.to_string())
    };
    let version_tag = text("txtvers")?;
    if version_tag != TXT_VERSION {
        return Err(TxtError::Version(version_tag));
    }
    let service = text("service")?;
    let id = text("id")?;
    // An empty version is legal in go-micro's model.
    let version = match text("version") {
        Ok(v) => v,
        Err(TxtError::Missing(_)) => String::new(),
        Err(e) => return Err(e),
    };
    let ttl = match fields.get("ttl") {
        None => None,
        Some(bytes) => {
            let secs = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|s| *s > 0)
                .ok_or_else(|| TxtError::BadValue {
                    key: "ttl",
                    reason: "not a positive number of seconds".into(),
                })?;
            Some(Duration::from_secs(u64::from(secs)))
        }
    };
    let metadata = match joined(&fields, "meta")? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| TxtError::BadValue {
            key: "meta",
            reason: e.to_string(),
        })?,
        None => HashMap::new(),
    };
    let endpoints = match joined(&fields, "ep")? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| TxtError::BadValue {
            key: "ep",
            reason: e.to_string(),
        })?,
        None => Vec::new(),
    };
    Ok(Decoded {
        service,
        version,
        id,
        metadata,
        endpoints,
        ttl,
    })
}

/// Joins `prefix.0`, `prefix.1`, ... ; `None` when `prefix.0` is absent.
fn joined(
    fields: &HashMap<String, &[u8]>,
    prefix: &'static str,
) -> Result<Option<Vec<u8>>, TxtError> {
    let count = fields
        .keys()
        .filter(|k| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .count();
    if count == 0 {
        return Ok(None);
    }
    if count > MAX_CHUNKS {
        return Err(TxtError::BadChunks(prefix));
    }
    let mut out = Vec::new();
    for index in 0..count {
        let piece = fields
            .get(&format!("{prefix}.{index}"))
            .ok_or(TxtError::BadChunks(prefix))?;
        out.extend_from_slice(piece);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn sample() -> (Service, Node) {
        let mut node = Node::new(
            "go.micro.srv.vessel-0f8fad5b-d9cb-469f-a165-70867728950e",
            "127.0.0.1:4000",
        );
        node.metadata.insert("protocol".into(), "grpc".into());
        let mut service = Service::new("go.micro.srv.vessel").version("latest");
        for i in 0..20 {
            service.endpoints.push(Endpoint {
                name: format!("VesselService.Method{i}"),
                request: Some(Value::new("Specification", "Specification")),
                response: Some(Value::new("Response", "Response")),
                metadata: HashMap::new(),
            });
        }
        (service, node)
    }

    fn roundtrip(pairs: &[(String, Vec<u8>)]) -> Result<Decoded, TxtError> {
        decode(pairs.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))))
    }

    #[test]
    fn endpoints_longer_than_one_txt_string_round_trip() {
        let (service, node) = sample();
        let pairs = encode(&service, &node, None).unwrap();
        assert!(pairs.iter().filter(|(k, _)| k.starts_with("ep.")).count() > 1);
        assert!(pairs.iter().all(|(k, v)| k.len() + 1 + v.len() <= 255));
        let decoded = roundtrip(&pairs);
        assert_eq!(decoded.as_ref().map(|d| d.endpoints.len()), Ok(20));
        assert_eq!(decoded.map(|d| d.metadata), Ok(node.metadata));
    }

    #[test]
    fn too_many_endpoints_is_a_clear_error() {
        let (mut service, node) = sample();
        let many = service.endpoints.clone();
        for _ in 0..10 {
            service.endpoints.extend(many.clone());
        }
        let err = encode(&service, &node, None).err().unwrap_or_default();
        assert!(err.contains("bytes of TXT"), "{err}");
    }

    #[test]
    fn missing_piece_is_rejected() {
        let (service, node) = sample();
        let pairs: Vec<_> = encode(&service, &node, None)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "ep.1")
            .collect();
        assert_eq!(roundtrip(&pairs), Err(TxtError::BadChunks("ep")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9._:/ é-]{1,40}"
        }

        prop_compose! {
            fn services()(
                name in text(),
                version in "[a-z0-9.]{0,8}",
                id in text(),
                metadata in prop::collection::hash_map("[a-z]{1,10}", text(), 0..6),
                endpoints in prop::collection::vec((text(), text()), 0..12),
            ) -> (Service, Node) {
                let mut node = Node::new(id, "127.0.0.1:1");
                node.metadata = metadata;
                let mut service = Service::new(name).version(version);
                for (name, ty) in endpoints {
                    service.endpoints.push(Endpoint {
                        name,
                        request: Some(Value::new(ty.clone(), ty)),
                        response: None,
                        metadata: HashMap::new(),
                    });
                }
                (service, node)
            }
        }

        proptest! {
            #[test]
            fn what_is_encoded_decodes_the_same((service, node) in services()) {
                let pairs = encode(&service, &node, Some(Duration::from_secs(90))).unwrap();
                let decoded = roundtrip(&pairs).unwrap();
                prop_assert_eq!(decoded.service, service.name);
                prop_assert_eq!(decoded.version, service.version);
                prop_assert_eq!(decoded.id, node.id);
                prop_assert_eq!(decoded.metadata, node.metadata);
                prop_assert_eq!(decoded.endpoints, service.endpoints);
                prop_assert_eq!(decoded.ttl, Some(Duration::from_secs(90)));
            }

            #[test]
            fn arbitrary_records_never_panic(
                pairs in prop::collection::vec(
                    ("(txtvers|service|version|id|ttl|meta\\.[0-9]|ep\\.[0-9]|[a-z.]{1,6})",
                     prop::option::of(prop::collection::vec(any::<u8>(), 0..300))),
                    0..40,
                )
            ) {
                let _ = decode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
            }

            #[test]
            fn cut_values_with_a_piece_missing_are_rejected(
                (service, node) in services(), drop_index in 0usize..8
            ) {
                let pairs = encode(&service, &node, None).unwrap();
                let key = format!("ep.{drop_index}");
                let pieces = pairs.iter().filter(|(k, _)| k.starts_with("ep.")).count();
                prop_assume!(drop_index + 1 < pieces);
                let kept: Vec<_> = pairs.into_iter().filter(|(k, _)| *k != key).collect();
                prop_assert!(roundtrip(&kept).is_err());
            }
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        let bad: &[(&str, Option<&[u8]>)] = &[
            ("txtvers", Some(b"1")),
            ("service", Some(&[0xff, 0xfe])),
            ("id", Some(b"x")),
        ];
        assert!(matches!(
            decode(bad.iter().copied()),
            Err(TxtError::BadValue { .. })
        ));
        let no_version: &[(&str, Option<&[u8]>)] = &[("service", Some(b"a"))];
        assert_eq!(
            decode(no_version.iter().copied()),
            Err(TxtError::Missing("txtvers"))
        );
        let bad_json: &[(&str, Option<&[u8]>)] = &[
            ("txtvers", Some(b"1")),
            ("service", Some(b"a")),
            ("id", Some(b"a-1")),
            ("meta.0", Some(b"{not json")),
        ];
        assert!(matches!(
            decode(bad_json.iter().copied()),
            Err(TxtError::BadValue { key: "meta", .. })
        ));
    }
}
