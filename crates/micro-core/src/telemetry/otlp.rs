//! The OTLP/gRPC exporter: [`Telemetry`] builds it, [`TelemetryGuard`] flushes it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// How long a guard dropped without [`TelemetryGuard::shutdown`] waits for the export.
const DROP_FLUSH: Duration = Duration::from_secs(2);

/// The boxed OpenTelemetry layer [`Telemetry::layer`] returns.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// Where and how traces are exported: OTLP over gRPC (micro's own tonic).
///
/// [`Telemetry::from_env`] reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; with neither (or `OTEL_SDK_DISABLED=true`) it is
/// disabled and adds no layer. The SDK itself reads `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` (`_ARG`).
///
/// A program with its own subscriber adds the layer itself:
///
/// ```no_run
/// use micro_core::telemetry::Telemetry;
/// use micro_core::tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
/// # async fn demo() {
/// let (otel, guard) = Telemetry::from_env().service_name("consignment-cli").layer();
/// micro_core::tracing_subscriber::registry()
///     .with(micro_core::tracing_subscriber::fmt::layer())
///     .with(otel)
///     .init();
/// // … calls …
/// guard.shutdown(std::time::Duration::from_secs(2)).await;
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Telemetry {
    endpoint: Option<String>,
    service_name: Option<String>,
    default_service_name: Option<String>,
    sampler: Option<Sampler>,
}

impl Telemetry {
    /// Export where the environment says (see the type's docs); disabled when it
    /// names no endpoint.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled =
            var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let endpoint = if disabled {
            None
        } else {
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        };
        Self {
            endpoint,
            ..Self::default()
        }
    }

    /// No export at all.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Exports to `url` (`http://host:4317`), whatever the environment says.
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The `service.name` resource attribute, overriding `OTEL_SERVICE_NAME`.
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The name used when neither [`Telemetry::service_name`] nor
    /// `OTEL_SERVICE_NAME` gives one (a service's registry name).
    pub(crate) fn default_service_name(mut self, name: &str) -> Self {
        if self.default_service_name.is_none() {
            self.default_service_name = Some(name.to_string());
        }
        self
    }

    /// The sampler, instead of the one `OTEL_TRACES_SAMPLER` names (default
    /// `parentbased_always_on`).
    #[must_use]
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Whether spans will be exported.
    pub fn is_enabled(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The OpenTelemetry layer for a `tracing` subscriber (`None` when disabled or
    /// when the exporter cannot be built, which is reported on stderr), and the guard
    /// that flushes the spans. Call it within a tokio runtime.
    ///
    /// The layer takes spans and events at `info` and above, except those of the
    /// HTTP/2 and gRPC crates the exporter itself runs on.
    pub fn layer<S>(self) -> (Option<BoxedLayer<S>>, TelemetryGuard)
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        match self.provider() {
            Ok(Some(provider)) => {
                let tracer = provider.tracer("micro-core");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter());
                (Some(Box::new(layer)), TelemetryGuard(Some(provider)))
            }
            Ok(None) => (None, TelemetryGuard(None)),
            Err(e) => {
                eprintln!("micro: traces are not exported: {e}");
                (None, TelemetryGuard(None))
            }
        }
    }

    fn provider(self) -> Result<Option<SdkTracerProvider>, String> {
        let Some(endpoint) = self.endpoint else {
            return Ok(None);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the OTLP exporter needs a tokio runtime".to_string());
        }
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        let mut resource = Resource::builder();
        let from_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty());
        if let Some(name) = self.service_name {
            resource = resource.with_service_name(name);
        } else if let (false, Some(name)) = (from_env, self.default_service_name) {
            resource = resource.with_service_name(name);
        }
        let mut builder = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build());
        if let Some(sampler) = self.sampler {
            builder = builder.with_sampler(sampler);
        }
        Ok(Some(builder.build()))
    }
}

/// What the OpenTelemetry layer takes: `info` and above, but not the crates the
/// exporter runs on (their spans would be exported by the exporter, forever).
fn filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

/// Keeps the tracer provider; flushes and shuts it down with
/// [`TelemetryGuard::shutdown`], or when dropped (waiting up to 2 s, on a blocking
/// thread when in a runtime: prefer `shutdown` in async code).
#[derive(Debug)]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl TelemetryGuard {
    /// A guard with nothing to flush.
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether it holds a provider (traces are exported).
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Exports what is buffered and shuts the provider down, waiting at most
    /// `timeout` (on a blocking thread, so the runtime keeps driving the export).
    pub async fn shutdown(mut self, timeout: Duration) {
        let Some(provider) = self.0.take() else {
            return;
        };
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_millis(100), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export at shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export at shutdown failed"),
            Err(_) => tracing::warn!(?timeout, "trace export at shutdown timed out"),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn_blocking(move || provider.shutdown_with_timeout(DROP_FLUSH)));
            }
            Err(_) => {
                let _ = provider.shutdown_with_timeout(DROP_FLUSH);
            }
        }
    }
}
