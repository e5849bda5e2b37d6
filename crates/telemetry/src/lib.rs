//! Traces, logs and metrics shared by every process of the shop suite.
//!
//! Every service calls [`init`] first thing in `main`. It installs one `tracing` subscriber that
//!
//! - writes logs: JSON lines with `trace_id` and `span_id` ([`logs`]) when stdout is not a
//!   terminal, pretty text when it is (`LOG_FORMAT=json|pretty` overrides), filtered by
//!   `RUST_LOG`;
//! - creates spans as filtered by `TRACES_FILTER` (default `info`), apart from the logs, so that
//!   quiet logs do not cut traces short;
//! - feeds spans to OpenTelemetry, so every span has a W3C trace context, and exports them over
//!   OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//!   set. The other standard variables apply: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*_TIMEOUT/HEADERS`. With no
//!   endpoint, no exporter exists: spans still carry ids (which propagation needs) and are
//!   dropped when they end.
//!
//! The trace context is what crosses process boundaries:
//!
//! - [`current_trace_headers`] renders the current span's context as `traceparent` (and
//!   `tracestate`) for an outbox row or a gRPC request;
//! - [`set_parent_from_headers`] makes a span the child of a context received in Kafka headers or
//!   gRPC metadata; [`continue_message_trace`] also links a consumer's span to the record's
//!   creation context;
//! - [`grpc`] does both for gRPC calls, with RED metrics, as tower layers.
//!
//! Metrics are Prometheus families in a per-process [`metrics::Registry`].

pub mod grpc;
pub mod logs;
pub mod metrics;

/// The client span of a database query: `#[shop_telemetry::db_span("SELECT", "accounts")]`
/// (see the `shop-telemetry-macros` crate).
pub use shop_telemetry_macros::db_span;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The W3C trace-context header carrying trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// Which spans become OpenTelemetry spans unless `TRACES_FILTER` (same syntax as `RUST_LOG`)
/// says otherwise: the suite's own spans (requests, outbox, relay, consumers, database calls),
/// not the chatter of the libraries beneath (h2, hyper, tower at debug level).
pub const DEFAULT_TRACES_FILTER: &str = "info";

/// Keeps the tracer provider alive; dropping it exports the spans still buffered and shuts the
/// exporter down (so keep it until the end of `main`).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing useful can be done with a shutdown error while the process exits.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber for `service_name`. Call it inside the Tokio runtime: the
/// OTLP exporter's gRPC channel lives there.
///
/// `default_filter` applies when `RUST_LOG` is not set (e.g. `"info"`).
///
/// # Panics
/// If a global subscriber is already installed (call it once, from `main`).
pub fn init(service_name: &'static str, default_filter: &str) -> TelemetryGuard {
    let (provider, export_error) = tracer_provider(service_name);
    let tracer = provider.tracer(service_name);
    // Logs and spans are filtered apart: quiet logs (RUST_LOG=warn) must not switch tracing
    // off, since a span filtered out is never created and its trace breaks there.
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let trace_filter = EnvFilter::try_from_env("TRACES_FILTER")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_TRACES_FILTER));
    let pretty = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => false,
        Ok("pretty") => true,
        _ => std::io::stdout().is_terminal(),
    };
    let logs = if pretty {
        tracing_subscriber::fmt::layer().boxed()
    } else {
        logs::JsonLogLayer::new(std::io::stdout).boxed()
    };
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter),
        )
        .with(logs.with_filter(log_filter))
        .init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(error) = export_error {
        tracing::error!(%error, "OTLP trace export is configured but could not be set up; spans are not exported.");
    }
    TelemetryGuard { provider }
}

/// Installs a subscriber for tests, once per process: spans get real trace contexts, and logs
/// are printed (captured by the test harness) only when `TEST_LOG` is set.
pub fn init_for_tests() {
    static INIT: OnceLock<SdkTracerProvider> = OnceLock::new();
    INIT.get_or_init(|| {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let logs = std::env::var_os("TEST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        });
        // Another test harness may have installed a subscriber already; keep that one.
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .try_init();
        provider
    });
}

/// Whether the environment asks for OTLP trace export.
fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none")
        || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    !disabled && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The provider, with a batching OTLP/gRPC exporter when the environment configures one (and
/// the error, when it does but the exporter cannot be built).
fn tracer_provider(
    service_name: &'static str,
) -> (
    SdkTracerProvider,
    Option<opentelemetry_otlp::ExporterBuildError>,
) {
    // OTEL_SERVICE_NAME, when set, names the service; the resource builder reads it (and
    // OTEL_RESOURCE_ATTRIBUTES) from the environment.
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    if !otlp_configured() {
        return (builder.build(), None);
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        // Batches are exported from a background thread: a slow or absent collector costs
        // the request path nothing (spans beyond the queue's capacity are dropped).
        Ok(exporter) => (builder.with_batch_exporter(exporter).build(), None),
        Err(error) => (builder.build(), Some(error)),
    }
}

/// The current span's trace context as W3C headers (`traceparent`, and `tracestate` when set).
/// Empty when the current span has no valid context (no subscriber, or a disabled span).
pub fn current_trace_headers() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    let mut carrier = HeaderCarrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.0.into_iter().collect()
}

/// Makes `span` a child of the trace context found in `headers` (name/value pairs such as Kafka
/// headers or gRPC metadata). Headers without a valid `traceparent` leave the span as it is.
pub fn set_parent_from_headers<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let carrier = HeaderCarrier(
        headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect(),
    );
    if !carrier.0.contains_key(TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    // Fails only when the span was already started elsewhere; the span then keeps its parent.
    let _ = span.set_parent(cx);
}

/// Makes `span` the child of the message creation context found in `headers` (a consumed
/// record's `traceparent`), and links it to that context: what the messaging conventions ask
/// of a "process" span (it SHOULD link to the creation context; for a single message it MAY
/// also be its child, which keeps an order's saga one trace). Headers without a valid
/// `traceparent` leave the span as it is.
pub fn continue_message_trace<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    use opentelemetry::trace::TraceContextExt;
    let carrier = HeaderCarrier(
        headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect(),
    );
    if !carrier.0.contains_key(TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let creation = cx.span().span_context().clone();
    // Fails only when the span was already started elsewhere; the span then keeps its parent.
    let _ = span.set_parent(cx);
    span.add_link(creation);
}

/// The trace id (32 hex digits) of the current span, if it has a valid context.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[derive(Default)]
struct HeaderCarrier(HashMap<String, String>);

impl Injector for HeaderCarrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for HeaderCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_gets_a_traceparent_that_a_child_in_another_process_continues() {
        init_for_tests();
        let producer = tracing::info_span!("producer");
        let headers = producer.in_scope(current_trace_headers);
        let traceparent = &headers.iter().find(|(k, _)| k == TRACEPARENT).unwrap().1;
        assert_eq!(traceparent.len(), 55, "{traceparent}");
        let trace_id = producer.in_scope(current_trace_id).unwrap();
        assert!(traceparent.contains(&trace_id));

        let consumer = tracing::info_span!("consumer");
        set_parent_from_headers(
            &consumer,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        assert_eq!(consumer.in_scope(current_trace_id).unwrap(), trace_id);
    }

    #[test]
    fn headers_without_traceparent_leave_the_span_alone() {
        init_for_tests();
        let span = tracing::info_span!("orphan");
        let before = span.in_scope(current_trace_id);
        set_parent_from_headers(&span, [("ce_id", "1")]);
        assert_eq!(span.in_scope(current_trace_id), before);
    }
}
