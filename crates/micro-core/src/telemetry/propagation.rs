//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in gRPC metadata and
//! broker headers. Without the `otel` feature every function here does nothing.
//!
//! micro uses its own propagator (trace context then baggage), not the global one,
//! so propagation works whether or not the program set a global propagator.

use std::collections::HashMap;

#[cfg(feature = "otel")]
mod imp {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use opentelemetry::propagation::{
        Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
    };
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub(super) fn propagator() -> &'static TextMapCompositePropagator {
        static PROPAGATOR: OnceLock<TextMapCompositePropagator> = OnceLock::new();
        PROPAGATOR.get_or_init(|| {
            TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])
        })
    }

    /// Writes into gRPC metadata, skipping empty values and invalid keys or values.
    pub(super) struct MetadataInjector<'a>(pub(super) &'a mut tonic::metadata::MetadataMap);

    impl Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if value.is_empty() {
                return;
            }
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_str()),
            ) {
                self.0.insert(k, v);
            }
        }
    }

    /// Writes into a broker message's headers, skipping empty values.
    pub(super) struct MapInjector<'a>(pub(super) &'a mut HashMap<String, String>);

    impl Injector for MapInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if value.is_empty() {
                return;
            }
            // One entry per key, whatever case the publisher's metadata used.
            self.0.retain(|k, _| !k.eq_ignore_ascii_case(key));
            self.0.insert(key.to_string(), value);
        }
    }

    struct HeaderExtractor<'a>(&'a http::HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    pub(super) struct MapExtractor<'a>(pub(super) &'a HashMap<String, String>);

    impl Extractor for MapExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    /// The span's OpenTelemetry context, when it has a valid one (a layer records it).
    fn valid_context(span: &tracing::Span) -> Option<opentelemetry::Context> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        cx.span().span_context().is_valid().then_some(cx)
    }

    pub(crate) fn inject_metadata(
        span: &tracing::Span,
        metadata: &mut tonic::metadata::MetadataMap,
    ) {
        if let Some(cx) = valid_context(span) {
            propagator().inject_context(&cx, &mut MetadataInjector(metadata));
        }
    }

    pub(crate) fn inject_map(span: &tracing::Span, header: &mut HashMap<String, String>) {
        if let Some(cx) = valid_context(span) {
            propagator().inject_context(&cx, &mut MapInjector(header));
        }
    }

    fn adopt(span: &tracing::Span, parent: opentelemetry::Context) {
        if !span.is_disabled() && parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    pub(crate) fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
        adopt(span, propagator().extract(&HeaderExtractor(headers)));
    }

    pub(crate) fn set_parent_from_map(span: &tracing::Span, header: &HashMap<String, String>) {
        adopt(span, propagator().extract(&MapExtractor(header)));
    }
}

/// Writes `span`'s trace context (and baggage) into a call's gRPC metadata, replacing
/// what the caller's metadata carried, when the span is recorded by OpenTelemetry.
#[inline]
pub(crate) fn inject_metadata(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    #[cfg(feature = "otel")]
    imp::inject_metadata(span, metadata);
    #[cfg(not(feature = "otel"))]
    let _ = (span, metadata);
}

/// Writes `span`'s trace context (and baggage) into a broker message's headers.
#[inline]
pub(crate) fn inject_map(span: &tracing::Span, header: &mut HashMap<String, String>) {
    #[cfg(feature = "otel")]
    imp::inject_map(span, header);
    #[cfg(not(feature = "otel"))]
    let _ = (span, header);
}

/// Makes the trace context carried by `headers` (`traceparent`, `tracestate`,
/// `baggage`) the parent of `span`. Nothing happens when the headers carry none or
/// the `otel` feature is off.
#[inline]
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    #[cfg(feature = "otel")]
    imp::set_parent_from_headers(span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// Makes the trace context carried by a broker message's headers the parent of
/// `span`: for handlers registered with the raw [`broker`](crate::broker) API.
#[inline]
pub fn set_parent_from_message(span: &tracing::Span, header: &HashMap<String, String>) {
    #[cfg(feature = "otel")]
    imp::set_parent_from_map(span, header);
    #[cfg(not(feature = "otel"))]
    let _ = (span, header);
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::imp::{MapExtractor, MapInjector, MetadataInjector, propagator};

    fn remote_context() -> opentelemetry::Context {
        let span = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([9; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    #[test]
    fn injection_skips_empty_values_and_replaces_any_case() {
        let mut header = HashMap::from([("TraceParent".to_string(), "00-old-old-01".to_string())]);
        propagator().inject_context(&remote_context(), &mut MapInjector(&mut header));
        let traceparent: Vec<_> = header
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .collect();
        assert_eq!(traceparent.len(), 1, "{header:?}");
        assert_eq!(
            traceparent[0].1,
            "00-07070707070707070707070707070707-0909090909090909-01"
        );
        // The empty trace state is not written.
        assert!(!header.contains_key("tracestate"), "{header:?}");

        let mut metadata = tonic::metadata::MetadataMap::new();
        propagator().inject_context(&remote_context(), &mut MetadataInjector(&mut metadata));
        assert!(metadata.get("traceparent").is_some());
        assert!(metadata.get("tracestate").is_none(), "{metadata:?}");
    }

    #[test]
    fn extraction_reads_any_case() {
        let header = HashMap::from([(
            "Traceparent".to_string(),
            "00-07070707070707070707070707070707-0909090909090909-01".to_string(),
        )]);
        assert!(MapExtractor(&header).get("traceparent").is_some());
        let cx = propagator().extract(&MapExtractor(&header));
        let span = cx.span();
        assert_eq!(span.span_context().trace_id(), TraceId::from_bytes([7; 16]));
        assert!(span.span_context().is_remote());
    }
}
