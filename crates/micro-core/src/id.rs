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
