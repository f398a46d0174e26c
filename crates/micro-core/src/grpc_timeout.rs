//! The `grpc-timeout` header: written by the client on every RPC shape, read by the
//! server. At most 8 digits and a unit (H, M, S, m, u, n).

use std::cell::RefCell;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};

/// The header's name.
pub(crate) const HEADER: &str = "grpc-timeout";

/// [`HEADER`] as a header name, made at compile time: looking it up by `&str`
/// would check its characters on every call.
pub(crate) const HEADER_NAME: http::HeaderName = http::HeaderName::from_static(HEADER);

/// [`HEADER`] as a metadata key, for requests' metadata. Cloning it copies no bytes
/// and checks nothing, where `insert(HEADER, ..)` would check its characters.
pub(crate) fn metadata_key() -> tonic::metadata::MetadataKey<Ascii> {
    static KEY: std::sync::LazyLock<tonic::metadata::MetadataKey<Ascii>> =
        std::sync::LazyLock::new(|| tonic::metadata::MetadataKey::from_static(HEADER));
    KEY.clone()
}

/// Parses a `grpc-timeout` value; `None` for anything malformed.
pub(crate) fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` for the time left, in whole milliseconds (rounded down, so the
/// server never outlives the caller). Within one millisecond calls carry the same
/// value: HPACK sends it as one indexed byte, and each thread formats it once.
pub(crate) fn encode(left: Duration) -> MetadataValue<Ascii> {
    thread_local! {
        static LAST: RefCell<Option<(u128, MetadataValue<Ascii>)>> = const { RefCell::new(None) };
    }
    let millis = left.as_millis();
    if millis == 0 {
        return format(left);
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == millis => value.clone(),
            _ => {
                let value = format(left);
                *last = Some((millis, value.clone()));
                value
            }
        }
    })
}

fn format(left: Duration) -> MetadataValue<Ascii> {
    let millis = left.as_millis();
    let text = if millis == 0 {
        format!("{}u", left.as_micros())
    } else if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        // Eight digits at most: past about 27 hours, hours.
        format!("{}H", (left.as_secs() / 3600).min(99_999_999))
    };
    MetadataValue::try_from(text.as_str()).unwrap_or_else(|_| MetadataValue::from_static("1u"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in ["", "S", "123456789S", "5s", "-5S", "5", "é", "1é"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_whole_milliseconds() {
        let text = |d: Duration| encode(d).to_str().unwrap_or_default().to_string();
        assert_eq!(text(Duration::from_micros(29_999_871)), "29999m");
        assert_eq!(text(Duration::from_micros(29_999_001)), "29999m");
        assert_eq!(text(Duration::from_micros(250)), "250u");
        assert_eq!(text(Duration::ZERO), "0u");
        assert_eq!(text(Duration::from_secs(200_000)), "55H");
        assert_eq!(text(Duration::from_millis(99_999_999)), "99999999m");
    }

    #[test]
    fn what_is_written_is_read_back_within_a_millisecond() {
        for micros in [250, 1_000, 1_999, 29_999_871, 3_600_000_000] {
            let left = Duration::from_micros(micros);
            let value = encode(left);
            let read = parse(value.to_str().unwrap_or_default()).unwrap_or_default();
            assert!(
                read <= left && left - read < Duration::from_millis(1),
                "{micros}"
            );
        }
    }
}
