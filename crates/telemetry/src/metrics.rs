//! Prometheus metrics: one [`Registry`] per service process, filled by the parts of the service
//! (gRPC, eventing, the domain) and rendered by [`encode`] for `/metrics`.
//!
//! Names follow Prometheus conventions: a `shop_` prefix for the suite's own series, base units
//! (`_seconds`), `_total` for counters (added by the OpenMetrics encoder), labels for dimensions
//! that are bounded (service, method, code, topic, reason; never an order id). gRPC series use the
//! names of go-grpc-prometheus (`grpc_server_handled_total`, ...) that existing dashboards and
//! alerts already know.
//!
//! Every family is created once per registry and handed to the parts that record into it (they
//! are cheap `Arc` clones): registering the same name twice would render a duplicate family.

pub use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// A gauge holding a float (ages in seconds).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A labelled histogram whose buckets are fixed by a plain function (so the type can be named).
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders every metric of `registry` in the OpenMetrics text format (which Prometheus scrapes).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Buckets for latencies from a millisecond to a minute: the range of a gRPC call, a database
/// transaction, a saga hop and a relay that waited for a broker to come back.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Buckets for batch sizes (1 to 1000 records).
pub fn batch_size_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])
}

/// A labelled latency histogram family.
pub fn latency_family<L: Clone + std::hash::Hash + Eq>() -> HistogramFamily<L> {
    Family::new_with_constructor(latency_histogram)
}
