//! The log a service writes when its program did not set one up.
//!
//! micro logs through [`tracing`] (re-exported as `micro_core::tracing`). When a
//! service starts and the program has installed no `tracing` subscriber, micro installs
//! a plain one writing to stderr, so that a service says what it does as go-micro's do:
//! its start-up (name, node id, address, registry), its registration and its
//! shutdown, at `info`. A program that installs its own subscriber first is left alone.
//!
//! What it shows is [`Config::log_filter`](crate::Config::log_filter): `RUST_LOG`
//! (`tracing_subscriber::EnvFilter` directives, `info,micro_core=debug`), else go-micro's
//! `MICRO_LOG_LEVEL` (`trace`, `debug`, `info`, `warn`, `error`, `fatal`), else `info`.
//! `RUST_LOG=off` silences it.
//!
//! With the `otel` feature and an OTLP endpoint (see [`crate::telemetry`]), the
//! subscriber also has an OpenTelemetry layer, filtered on its own: `RUST_LOG=off`
//! silences the log, not the traces. A program that installs its own subscriber adds
//! that layer itself with `Telemetry::layer` (see [`crate::telemetry`]).

use tracing_subscriber::EnvFilter;

/// The filter used when neither `RUST_LOG` nor `MICRO_LOG_LEVEL` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// The directives for a go-micro log level, or `None` when `level` is not one.
pub(crate) fn level_directive(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        // go-micro's fatal logs and exits; here it is the most severe level there is.
        "error" | "fatal" => Some("error"),
        _ => None,
    }
}

/// Parses filter directives, as the default subscriber will.
pub(crate) fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| e.to_string())
}

/// The log's filter: `directives` (else [`DEFAULT_FILTER`]), without micro's call
/// spans unless the directives name their target (`micro_core::rpc=info`): the log
/// says what happens, the spans are for traces (and cost nothing when off).
fn log_filter(directives: Option<&str>) -> EnvFilter {
    let directives = directives.unwrap_or(DEFAULT_FILTER);
    // The configuration checked the directives when it read them.
    let filter = parse_filter(directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if directives.contains(crate::telemetry::TARGET) {
        return filter;
    }
    match format!("{}=off", crate::telemetry::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs the plain subscriber with `directives` (else [`DEFAULT_FILTER`]) unless
/// one is installed already. Returns whether this call installed it.
pub(crate) fn install_default(directives: Option<&str>) -> bool {
    if tracing::dispatcher::has_been_set() {
        return false;
    }
    let filter = log_filter(directives);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init()
        .is_ok()
}

/// Installs the plain subscriber as [`install_default`] does, with `telemetry`'s
/// OpenTelemetry layer beside the log when it exports. Returns the guard that
/// flushes the export, when this call installed a subscriber that exports.
#[cfg(feature = "otel")]
pub(crate) fn install_default_with(
    directives: Option<&str>,
    telemetry: crate::telemetry::Telemetry,
) -> Option<crate::telemetry::TelemetryGuard> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    if tracing::dispatcher::has_been_set() {
        return None;
    }
    if !telemetry.is_enabled() {
        install_default(directives);
        return None;
    }
    let filter = log_filter(directives);
    let (otel, guard) = telemetry.layer();
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init()
        .ok()
        .map(|()| guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_levels_map_to_tracing_levels() {
        assert_eq!(level_directive("fatal"), Some("error"));
        assert_eq!(level_directive(" Debug "), Some("debug"));
        assert_eq!(level_directive("warning"), Some("warn"));
        assert_eq!(level_directive("loud"), None);
    }

    #[test]
    fn the_log_leaves_call_spans_out_unless_asked() {
        let default = log_filter(None).to_string();
        assert!(default.contains("micro_core::rpc=off"), "{default}");
        let asked = log_filter(Some("info,micro_core::rpc=debug")).to_string();
        assert!(!asked.contains("micro_core::rpc=off"), "{asked}");
        assert!(asked.contains("micro_core::rpc=debug"), "{asked}");
    }

    #[test]
    fn directives_are_checked() {
        assert!(parse_filter("info,micro_core=debug").is_ok());
        assert!(parse_filter("micro_core=verbose").is_err());
    }
}
