//! JSON log lines that carry the OpenTelemetry `trace_id` and `span_id` of the span they were
//! written in, so a log line leads to its trace and a trace to its logs.
//!
//! One object per line: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, the event's
//! other fields, `span` (the current span's name), `trace_id` and `span_id` (when inside a span).

use std::io::Write;
use std::sync::OnceLock;

use chrono::{SecondsFormat, Utc};
use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes each event as one JSON object per line to `writer`.
#[derive(Debug)]
pub struct JsonLogLayer<W> {
    writer: W,
    /// The subscriber this layer is part of: needed to ask the OpenTelemetry layer for a span's
    /// context. Weak, because the subscriber owns this layer.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<W> JsonLogLayer<W> {
    /// A layer writing to `writer` (e.g. `std::io::stdout`).
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            dispatch: OnceLock::new(),
        }
    }
}

impl<S, W> Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut JsonFields(&mut line));

        if let Some(span) = ctx.event_span(event) {
            line.insert("span".into(), span.name().into());
            let dispatch = self.dispatch.get().and_then(|d| d.upgrade());
            if let Some(cx) = dispatch
                .as_ref()
                .and_then(|d| tracing_opentelemetry::get_otel_context(&span.id(), d))
            {
                let otel = cx.span();
                let sc = otel.span_context();
                if sc.is_valid() {
                    line.insert("trace_id".into(), sc.trace_id().to_string().into());
                    line.insert("span_id".into(), sc.span_id().to_string().into());
                }
            }
        }

        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // A log line that cannot be written has nowhere else to go.
        let _ = self.writer.make_writer_for(meta).write_all(text.as_bytes());
    }
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        // `log` crate records arrive with `log.*` fields describing their origin; keep them out.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn lines_are_json_with_the_trace_and_span_ids_of_their_span() {
        use opentelemetry::trace::TracerProvider as _;
        let buffer = Buffer::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(JsonLogLayer::new(buffer.clone()));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside any span");
            let span = tracing::info_span!("place order");
            let _entered = span.enter();
            tracing::warn!(order.id = "o-1", "inside");
            let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&span);
            let sc = cx.span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });

        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside any span");
        assert_eq!(lines[0]["answer"], 42);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["order.id"], "o-1");
        assert_eq!(lines[1]["span"], "place order");
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, "0".repeat(32));
    }
}
