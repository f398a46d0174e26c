//! Random identifiers: node ids, broker subscription ids, event ids.

/// A random (version 4) UUID as text, as go-micro's `uuid.New().String()`.
///
/// The bytes come from `fastrand`, seeded per thread from the OS: ids must be
/// unique, not secret, so no cryptographic generator is pulled in for them.
pub(crate) fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::random_uuid;

    #[test]
    fn ids_are_version_4_uuids_and_differ() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        for id in [a, b] {
            let parsed = uuid::Uuid::parse_str(&id).map_err(|e| format!("{id}: {e}"));
            assert_eq!(parsed.map(|u| u.get_version_num()), Ok(4), "{id}");
            assert_eq!(id.len(), 36, "{id}");
        }
    }
}
