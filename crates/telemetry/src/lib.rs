//! Tracing and trace-context propagation shared by every process of the shop suite.
//!
//! Every service calls [`init`] first thing in `main`. It installs one `tracing` subscriber that
//! writes logs (JSON lines when stdout is not a terminal, pretty text when it is; filtered by
//! `RUST_LOG`) and feeds spans to OpenTelemetry, so that every span has a W3C trace context even
//! when nothing is exported. That context is what crosses process boundaries:
//!
//! - [`current_trace_headers`] renders the current span's context as `traceparent` (and
//!   `tracestate`) for an outbox row or a gRPC request;
//! - [`set_parent_from_headers`] makes a span the child of a context received in Kafka headers or
//!   gRPC metadata.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
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

/// Keeps the tracer provider alive; dropping it flushes and shuts the provider down.
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

/// Installs the global subscriber for `service_name`.
///
/// `default_filter` applies when `RUST_LOG` is not set (e.g. `"info"`).
///
/// # Panics
/// If a global subscriber is already installed (call it once, from `main`).
pub fn init(service_name: &'static str, default_filter: &str) -> TelemetryGuard {
    let provider = tracer_provider();
    let tracer = provider.tracer(service_name);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = if std::io::stdout().is_terminal() {
        tracing_subscriber::fmt::layer().boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    TelemetryGuard { provider }
}

/// Installs a subscriber for tests, once per process: spans get real trace contexts, and logs
/// are printed (captured by the test harness) only when `TEST_LOG` is set.
pub fn init_for_tests() {
    static INIT: OnceLock<SdkTracerProvider> = OnceLock::new();
    INIT.get_or_init(|| {
        let provider = tracer_provider();
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

fn tracer_provider() -> SdkTracerProvider {
    // The exporter is configured by the observability layer; without one, spans still get ids,
    // which is all trace propagation needs, and nothing is sent anywhere.
    SdkTracerProvider::builder().build()
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
