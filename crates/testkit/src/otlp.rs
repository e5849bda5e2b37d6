//! An OTLP/gRPC trace receiver: the collector end of the services' real export path, for tests
//! (which assert on the spans it received) and for local runs (`otlp-sink` prints each trace as
//! a tree).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio_util::sync::CancellationToken;

/// A span as exported by a service, flattened with the name of the service that sent it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: &'static str,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Each attribute's OTLP value type: `string`, `int`, `bool`, `double` or `other` (the
    /// conventions fix the type of many, e.g. a partition id is a string).
    pub attribute_types: BTreeMap<String, &'static str>,
    /// The spans this span links to, as `(trace_id, span_id)`.
    pub links: Vec<(String, String)>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// The span's status is ERROR.
    pub error: bool,
}

impl ReceivedSpan {
    /// The attribute's value rendered as text, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Duration in milliseconds.
    pub fn millis(&self) -> f64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos) as f64 / 1e6
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn value_type(value: Option<&AnyValue>) -> &'static str {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(_)) => "string",
        Some(any_value::Value::BoolValue(_)) => "bool",
        Some(any_value::Value::IntValue(_)) => "int",
        Some(any_value::Value::DoubleValue(_)) => "double",
        _ => "other",
    }
}

fn attribute_types(kvs: &[KeyValue]) -> BTreeMap<String, &'static str> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_type(kv.value.as_ref())))
        .collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn kind(raw: i32) -> &'static str {
    match raw {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        kind: kind(span.kind),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                        attribute_types: attribute_types(&span.attributes),
                        links: span
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        start_unix_nanos: span.start_time_unix_nano,
                        end_unix_nanos: span.end_time_unix_nano,
                        error: span.status.is_some_and(|s| s.code == 2),
                        name: span.name,
                    });
                }
            }
        }
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: CancellationToken,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl OtlpReceiver {
    /// Listens on `addr` (port 0 picks a free one).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Store::default();
        let spans = Arc::clone(&store.0);
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            if let Err(error) = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(store))
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
            {
                tracing::error!(%error, "OTLP receiver failed");
            }
        });
        Ok(Self { addr, spans, stop })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes every span received so far out of the receiver (later calls return only newer
    /// ones): a long-running collector keeps memory bounded this way.
    pub fn drain(&self) -> Vec<ReceivedSpan> {
        std::mem::take(
            &mut *self
                .spans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Renders the spans of one trace as an indented tree, children in start order:
///
/// ```text
/// order-service  shop.order.v1.OrderService/PlaceOrder [server] 12.3 ms
///   order-service  outbox append [internal] 0.4 ms
///     order-service  send order.events.v1 [producer] 3.1 ms
/// ```
pub fn render_tree(spans: &[ReceivedSpan]) -> String {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if span.parent_span_id.is_empty() || !ids.contains(span.parent_span_id.as_str()) {
            roots.push(span);
        } else {
            children
                .entry(span.parent_span_id.as_str())
                .or_default()
                .push(span);
        }
    }
    roots.sort_by_key(|s| s.start_unix_nanos);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nanos);
    }
    fn walk(
        out: &mut String,
        span: &ReceivedSpan,
        depth: usize,
        children: &HashMap<&str, Vec<&ReceivedSpan>>,
    ) {
        let _ = writeln!(
            out,
            "{:indent$}{:<22} {} [{}] {:.1} ms{}",
            "",
            span.service,
            span.name,
            span.kind,
            span.millis(),
            if span.error { " ERROR" } else { "" },
            indent = depth * 2
        );
        for child in children.get(span.span_id.as_str()).into_iter().flatten() {
            walk(out, child, depth + 1, children);
        }
    }
    let mut out = String::new();
    for root in roots {
        walk(&mut out, root, 0, &children);
    }
    out
}
