//! Real infrastructure for tests and local runs: a fresh PostgreSQL database per test and a
//! Kafka-protocol broker per test (librdkafka's mock cluster in-process, or the external broker
//! named by `KAFKA_BOOTSTRAP_SERVERS`, e.g. tansu in CI). No mocks of our own: what the tests
//! talk to speaks the real wire protocols.

mod db;
mod kafka;
pub mod otlp;

pub use db::TestDb;
pub use kafka::{Record, TestKafka};
pub use otlp::{OtlpReceiver, ReceivedSpan};

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
