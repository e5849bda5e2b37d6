//! librdkafka's callbacks into the consumer: rebalances.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};

use crate::EventingMetrics;
use crate::metrics::RebalanceLabels;

/// Partitions taken from this member since the loop last looked, as `(topic, partition)`.
pub(super) type Revoked = Arc<Mutex<Vec<(String, i32)>>>;

/// Counts rebalances and tells the loop which partitions a rebalance took away.
pub(super) struct Events {
    pub(super) group: String,
    pub(super) metrics: EventingMetrics,
    pub(super) revoked: Revoked,
}

/// No statistics callback: the lag is measured from the broker by the consumer's
/// [`LagMonitor`](crate::lag::LagMonitor), not from librdkafka's statistics, which are served
/// from the poll loop and stop with it.
impl ClientContext for Events {}

impl ConsumerContext for Events {
    /// Runs inside the loop's poll, before librdkafka (incrementally, with cooperative-sticky)
    /// adds or removes the partitions: no batch is being applied then.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.count("assigned");
                tracing::info!(group = %self.group, partitions = ?names(partitions), "Partitions assigned.");
            }
            Rebalance::Revoke(partitions) => {
                self.count("revoked");
                tracing::info!(group = %self.group, partitions = ?names(partitions), "Partitions revoked.");
                // A partition the loop paused for a retry keeps librdkafka's pause flag across
                // an unassignment, and would come back paused (and never be read again) if it
                // is ever assigned to this member again. Lift it now; the partition's next
                // owner starts from the committed offset, which is before the failed record.
                if let Err(error) = consumer.resume(partitions) {
                    tracing::debug!(%error, "Could not lift the pause of revoked partitions.");
                }
                let mut revoked = self
                    .revoked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                revoked.extend(
                    partitions
                        .elements()
                        .iter()
                        .map(|p| (p.topic().to_owned(), p.partition())),
                );
            }
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.group, %error, "Rebalance failed.");
            }
        }
    }
}

impl Events {
    fn count(&self, kind: &'static str) {
        self.metrics
            .rebalances
            .get_or_create(&RebalanceLabels {
                group: self.group.clone(),
                kind,
            })
            .inc();
    }
}

fn names(partitions: &rdkafka::TopicPartitionList) -> Vec<String> {
    partitions
        .elements()
        .iter()
        .map(|p| format!("{}/{}", p.topic(), p.partition()))
        .collect()
}
