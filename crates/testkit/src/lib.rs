//! Real infrastructure for tests and local runs: a fresh PostgreSQL database per test and a
//! Kafka-protocol broker per test (librdkafka's mock cluster in-process, the external broker
//! named by `KAFKA_BOOTSTRAP_SERVERS`, or a private Apache Kafka process), and the one
//! declaration of the suite's topology; and the tokens every gRPC call carries ([`auth`]). No mocks of our own: what the tests talk to speaks the
//! real wire protocols.

pub mod apache;
pub mod auth;
mod db;
mod kafka;
pub mod otlp;
mod postgres;
mod reflection;
mod scrape;
pub mod semconv;
pub mod service;
mod tcp_proxy;
pub mod topology;

pub use apache::ApacheKafka;
pub use auth::{Authed, Bearer, TestAuth, TokenIssuer, authed, connect_authed, test_auth};
pub use db::TestDb;
pub use kafka::{PartitionOffsets, Record, TestKafka, test_broker_is_apache};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::PrivatePostgres;
pub use reflection::reflected_services;
pub use scrape::{sample_sum, scrape_metric};
pub use shop_pgcluster::free_port;
pub use tcp_proxy::TcpProxy;
pub use topology::Topology;

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
///
/// # Panics
/// When the condition does not hold in time.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
