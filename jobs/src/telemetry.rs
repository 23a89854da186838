//! Structured logging with `tracing` (pretty for terminals, JSON when
//! `LUCID_LOG_FORMAT=json`), optional OpenTelemetry trace export over
//! OTLP/HTTP when `LUCID_OTLP_ENDPOINT` is set, and the request context that
//! jobs carry from the API call that enqueued them to the worker that runs
//! them: the request id and the W3C `traceparent`.

use std::collections::HashMap;

use opentelemetry::{propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{LogFormat, Settings};

/// Keeps the trace exporter running; dropping it flushes the spans not yet
/// sent (bounded by the exporter's timeout).
#[must_use = "dropping the guard stops the trace export"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing the trace export failed");
        }
    }
}

/// Installs the global subscriber for the process named `service`
/// (`lucid-api`, `lucid-worker`, `lucid-scheduler`). A second call is a
/// no-op (tests call it per app) and returns a guard that exports nothing.
///
/// The log filter is `LUCID_LOG_LEVEL`; spans at `info` and above are
/// exported whatever the log level, so a quiet log still gives whole traces.
pub fn init(settings: &Settings, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_target(true).boxed(),
    }
    .with_filter(filter);
    let provider = settings.otlp_endpoint.as_deref().and_then(|endpoint| {
        match otlp_provider(endpoint, service) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("LUCID_OTLP_ENDPOINT: trace export disabled: {error}");
                None
            }
        }
    });
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    match provider {
        Some(provider) if installed => {
            tracing::info!(service, "exporting traces over OTLP");
            Telemetry {
                provider: Some(provider),
            }
        }
        Some(provider) => {
            let _ = provider.shutdown();
            Telemetry::default()
        }
        None => Telemetry::default(),
    }
}

/// A tracer provider that batches spans to `{endpoint}/v1/traces`
/// (OTLP/HTTP, protobuf), the collector's standard path.
fn otlp_provider(endpoint: &str, service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// The W3C `traceparent` of the current span: empty when traces are not
/// exported. Jobs enqueued in a span carry it, so the worker's span for the
/// job joins the same trace.
pub fn current_trace_parent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` (not yet entered) a child of the remote span named by the
/// W3C `trace_parent`; an empty or malformed value leaves it a root.
pub fn set_remote_parent(span: &tracing::Span, trace_parent: &str) {
    if trace_parent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), trace_parent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the API call being served (empty elsewhere). Jobs
/// enqueued while serving it carry it, and the worker logs it with the job.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `fut` with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}
