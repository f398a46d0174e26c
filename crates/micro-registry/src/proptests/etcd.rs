//! Properties of the etcd values (`etcd/layout.rs`).

use super::*;
use crate::etcd::layout;

/// Any JSON, `depth` levels deep at most, with the service's field names for keys.
fn seeded_json(seed: &mut u64, depth: u32) -> serde_json::Value {
    use serde_json::Value as J;
    const KEYS: &[&str] = &[
        "name",
        "version",
        "metadata",
        "endpoints",
        "nodes",
        "id",
        "address",
        "request",
        "response",
        "values",
        "type",
        "Name",
    ];
    match next(seed) % if depth == 0 { 5 } else { 8 } {
        0 => J::Null,
        1 => J::Bool(next(seed) % 2 == 0),
        2 => J::from(next(seed) as i64 >> (next(seed) % 64)),
        3 => J::from(f64::from_bits(next(seed))),
        4 => J::String(seeded_short(seed, 8)),
        5 => J::Array(
            (0..next(seed) % 3)
                .map(|_| seeded_json(seed, depth - 1))
                .collect(),
        ),
        _ => J::Object(
            (0..next(seed) % 5)
                .map(|_| {
                    let key = if next(seed) % 4 == 0 {
                        seeded_short(seed, 4)
                    } else {
                        pick(seed, KEYS).to_string()
                    };
                    (key, seeded_json(seed, depth - 1))
                })
                .collect(),
        ),
    }
}

/// Changes `at` in one place picked by `seed`, up to `steps` levels down: a part
/// replaced by any JSON, a field removed, or a part set to null.
fn mutate(at: &mut serde_json::Value, seed: &mut u64, steps: u32) {
    use serde_json::Value as J;
    if steps > 0 {
        match at {
            J::Array(items) if !items.is_empty() => {
                let i = (next(seed) % items.len() as u64) as usize;
                return mutate(&mut items[i], seed, steps - 1);
            }
            J::Object(fields) if !fields.is_empty() => {
                let i = (next(seed) % fields.len() as u64) as usize;
                if let Some(child) = fields.values_mut().nth(i) {
                    return mutate(child, seed, steps - 1);
                }
            }
            _ => {}
        }
    }
    match (next(seed) % 3, &mut *at) {
        (0, J::Object(fields)) if !fields.is_empty() => {
            let i = (next(seed) % fields.len() as u64) as usize;
            if let Some(key) = fields.keys().nth(i).cloned() {
                fields.remove(&key);
            }
        }
        (1, _) => *at = J::Null,
        _ => *at = seeded_json(seed, 2),
    }
}

/// JSON that looks like a service value: a real one changed in a few places, or
/// any JSON with the right field names.
fn json_like() -> impl Strategy<Value = serde_json::Value> {
    (service(1..=2), 0u32..4, any::<u64>()).prop_map(|(service, changes, mut seed)| {
        if changes == 3 {
            return seeded_json(&mut seed, 4);
        }
        let mut value = serde_json::to_value(&service).unwrap();
        for _ in 0..changes {
            let steps = (next(&mut seed) % 5) as u32;
            mutate(&mut value, &mut seed, steps);
        }
        value
    })
}

/// What a value that decoded must be: a named service with one callable node.
fn assert_callable(service: &Service) -> Result<(), TestCaseError> {
    prop_assert!(!service.name.is_empty());
    prop_assert_eq!(service.nodes.len(), 1);
    prop_assert!(!service.nodes[0].id.is_empty());
    prop_assert!(!service.nodes[0].address.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn etcd_arbitrary_bytes_never_panic(
        key in bytes(40),
        value in bytes(200),
    ) {
        if let Ok(service) = layout::decode(&key, &value) {
            assert_callable(&service)?;
        }
    }

    #[test]
    fn etcd_json_of_any_shape_decodes_only_when_callable_and_reencodes_equal(
        key in bytes(40),
        value in json_like(),
    ) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match layout::decode(&key, &bytes) {
            Ok(service) => {
                assert_callable(&service)?;
                let again = layout::encode(&service, &service.nodes[0]).unwrap();
                prop_assert_eq!(layout::decode(&key, &again), Ok(service));
            }
            Err(e) => prop_assert!(e.starts_with(&*String::from_utf8_lossy(&key)), "{}", e),
        }
    }

    #[test]
    fn etcd_what_is_encoded_decodes_equal(service in service(1..=3)) {
        for node in &service.nodes {
            let key = layout::node_key(&service.name, &node.id);
            prop_assert!(key.starts_with(&layout::service_prefix(&service.name)));
            prop_assert!(!key[layout::service_prefix(&service.name).len()..].contains('/'));
            let value = layout::encode(&service, node).unwrap();
            let expected = Service { nodes: vec![node.clone()], ..service.clone() };
            prop_assert_eq!(layout::decode(key.as_bytes(), &value), Ok(expected));
        }
    }

    #[test]
    fn etcd_a_value_without_a_callable_node_is_an_error(
        service in service(0..=3),
        blank in 0usize..3,
    ) {
        let mut service = service;
        let node = match blank {
            0 => Node { id: String::new(), ..Node::new("n", "a:1") },
            1 => Node { address: String::new(), ..Node::new("n", "a:1") },
            _ => Node::new("n", "a:1"),
        };
        if blank == 2 {
            service.name.clear();
        }
        let value = layout::encode(&service, &node).unwrap();
        prop_assert!(layout::decode(b"k", &value).is_err());
        // More than one node in a value: also refused.
        service.name.push('s');
        service.nodes.push(Node::new("n", "a:1"));
        let value = serde_json::to_vec(&service).unwrap();
        prop_assert_eq!(layout::decode(b"k", &value).is_err(), service.nodes.len() != 1);
    }
}
