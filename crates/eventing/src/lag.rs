//! Consumer lag as the broker sees it: per partition, the records between a group's committed
//! offset and the partition's end.
//!
//! The consumer's poll loop is the last place to measure its own lag: a handler that never
//! returns, a partition paused for good or a dead process stops the loop, and with it any
//! measurement it makes (librdkafka's statistics are served from the same poll, so the lag they
//! report freezes at its last value, typically 0). The [`LagMonitor`] asks the broker instead,
//! on a timer of its own, with a client of its own that never joins the group: the group
//! coordinator's committed offsets (`OffsetFetch`) against the partition leaders' high
//! watermarks (`ListOffsets`). Offsets are committed only after the records' effects are (see
//! [`Consumer`](crate::Consumer)), so the lag counts records not yet applied, and it grows
//! while nothing is applied, whatever the reason.
//!
//! [`group_lag`] is the same measurement for any group, for tools.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::consumer::StartPosition;
use crate::metrics::{GroupLabels, PartitionLabels};
use crate::{EventingMetrics, KafkaConfig};

/// Where a consumer group stands on one partition, as the broker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset: the next record it will read. `None` while the group has
    /// committed nothing on this partition.
    pub committed: Option<i64>,
    /// The oldest offset still retained.
    pub low_watermark: i64,
    /// The offset the next record appended to the partition will get (its end).
    pub high_watermark: i64,
}

impl PartitionLag {
    /// Where the group reads next: its committed offset, or, without one, the oldest retained
    /// record (a group that starts from the earliest offset, as the suite's consumers do). An
    /// offset retention has already deleted counts from the oldest retained record too.
    pub fn position(&self) -> i64 {
        self.committed
            .map_or(self.low_watermark, |c| c.max(self.low_watermark))
    }

    /// Records the group has not committed yet (0 when it is at the end).
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.position()).max(0)
    }
}

/// How long one request to the broker may take before a measurement gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The lag of consumer group `group` on every partition of `topics`, from the broker: its
/// committed offsets against the partitions' ends. Topics the broker does not know are left
/// out. Works whether or not the group has members (a stopped or crashed consumer's lag keeps
/// growing here); the client it uses never joins the group.
///
/// # Errors
/// When the broker does not answer within 10 s per request, or refuses (not authorised to
/// describe the group or the topics).
pub async fn group_lag(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> KafkaResult<Vec<PartitionLag>> {
    let probe = LagProbe::new(kafka, group)?;
    let lag = probe.measure(topics).await;
    probe.close().await;
    lag
}

/// A client that reads a group's committed offsets and the partitions' ends. It is a consumer
/// only because librdkafka fetches committed offsets through one; it never subscribes, so it
/// never joins the group, takes no partition and commits nothing.
#[derive(Clone)]
pub(crate) struct LagProbe {
    client: Arc<BaseConsumer>,
}

impl LagProbe {
    pub(crate) fn new(kafka: &KafkaConfig, group: &str) -> KafkaResult<Self> {
        let mut config = kafka.client_config();
        config
            .set("group.id", group)
            .set("client.id", format!("{group}-lag"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "0");
        Ok(Self {
            client: Arc::new(config.create()?),
        })
    }

    /// One measurement of every partition of `topics`. The calls block (librdkafka's
    /// synchronous API), so they run on the blocking pool.
    pub(crate) async fn measure(&self, topics: &[String]) -> KafkaResult<Vec<PartitionLag>> {
        let client = Arc::clone(&self.client);
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || measure(&client, &topics))
            .await
            .unwrap_or_else(|_| Err(KafkaError::Canceled))
    }

    /// Drops the client off the async workers (closing a librdkafka consumer blocks).
    pub(crate) async fn close(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

fn measure(client: &BaseConsumer, topics: &[String]) -> KafkaResult<Vec<PartitionLag>> {
    // Serve the client's event queue (error events, mostly "all brokers down"): nothing else
    // polls it, and unserved events would pile up for as long as the process runs.
    while client.poll(Duration::ZERO).is_some() {}
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for t in metadata.topics() {
            if t.name() != topic || t.error().is_some() {
                continue;
            }
            for p in t.partitions() {
                partitions.add_partition(topic, p.id());
            }
        }
    }
    if partitions.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = client.committed_offsets(partitions.clone(), REQUEST_TIMEOUT)?;
    // The ends in one ListOffsets request per partition leader (offset -1 asks for the latest
    // offset), rather than one watermark query per partition.
    let ends =
        client.offsets_for_times(with_offsets(&partitions, Offset::End)?, REQUEST_TIMEOUT)?;
    let mut measured: Vec<PartitionLag> = Vec::with_capacity(partitions.count());
    for element in partitions.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Some(high_watermark) = ends
            .find_partition(topic, partition)
            .filter(|e| e.error().is_ok())
            .and_then(|e| offset(e.offset()))
        else {
            tracing::debug!(
                topic,
                partition,
                "No end offset for the partition; left out."
            );
            continue;
        };
        let committed = committed
            .find_partition(topic, partition)
            .and_then(|e| offset(e.offset()));
        measured.push(PartitionLag {
            topic: topic.to_owned(),
            partition,
            committed,
            low_watermark: 0,
            high_watermark,
        });
    }
    // The oldest retained offsets matter only where nothing was committed.
    let uncommitted: Vec<&mut PartitionLag> = measured
        .iter_mut()
        .filter(|p| p.committed.is_none())
        .collect();
    if !uncommitted.is_empty() {
        let mut list = TopicPartitionList::new();
        for p in &uncommitted {
            list.add_partition_offset(&p.topic, p.partition, Offset::Beginning)?;
        }
        let starts = client.offsets_for_times(list, REQUEST_TIMEOUT)?;
        for p in uncommitted {
            p.low_watermark = starts
                .find_partition(&p.topic, p.partition)
                .filter(|e| e.error().is_ok())
                .and_then(|e| offset(e.offset()))
                .unwrap_or(0);
        }
    }
    Ok(measured)
}

fn with_offsets(partitions: &TopicPartitionList, at: Offset) -> KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::with_capacity(partitions.count());
    for e in partitions.elements() {
        list.add_partition_offset(e.topic(), e.partition(), at)?;
    }
    Ok(list)
}

fn offset(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Measures a consumer group's lag every `interval` and exports it
/// (`shop_consumer_lag`, `shop_consumer_committed_offset`), apart from the consumer's loop:
/// [`Consumer::run`](crate::Consumer::run) starts it as a task of its own.
pub(crate) struct LagMonitor {
    pub(crate) probe: LagProbe,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) start: StartPosition,
    pub(crate) interval: Duration,
    pub(crate) metrics: EventingMetrics,
}

impl LagMonitor {
    /// Measures until `stop` is cancelled. A failed measurement is counted
    /// (`shop_consumer_lag_errors_total`) and logged once until the next success; the gauges
    /// keep their last values meanwhile (the lag is unknown, not 0).
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                measured = self.probe.measure(&self.topics) => match measured {
                    Ok(partitions) => {
                        if failing {
                            tracing::info!(group = %self.group, "Consumer lag measured again.");
                            failing = false;
                        }
                        self.export(&partitions);
                    }
                    Err(error) => {
                        self.metrics
                            .lag_errors
                            .get_or_create(&GroupLabels { group: self.group.clone() })
                            .inc();
                        if !failing {
                            tracing::warn!(group = %self.group, %error, "Could not measure the consumer lag; trying again.");
                            failing = true;
                        }
                    }
                },
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
        self.probe.close().await;
    }

    fn export(&self, partitions: &[PartitionLag]) {
        for p in partitions {
            let labels = PartitionLabels {
                group: self.group.clone(),
                topic: p.topic.clone(),
                partition: p.partition.to_string(),
            };
            // A group that starts at the end and has committed nothing yet reads from the end
            // once it is assigned the partition: nothing there is its backlog.
            let (position, lag) = match (p.committed, self.start) {
                (None, StartPosition::Latest) => (p.high_watermark, 0),
                _ => (p.position(), p.lag()),
            };
            self.metrics.lag.get_or_create(&labels).set(lag);
            self.metrics.committed.get_or_create(&labels).set(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
        PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed,
            low_watermark: low,
            high_watermark: high,
        }
    }

    #[test]
    fn the_lag_counts_from_the_committed_offset_or_the_oldest_retained_record() {
        assert_eq!(at(Some(7), 0, 10).lag(), 3);
        assert_eq!(at(Some(10), 0, 10).lag(), 0);
        // Nothing committed: everything retained is still to be read.
        assert_eq!(at(None, 4, 10).lag(), 6);
        // Retention deleted records the group never read: they cannot be read any more.
        assert_eq!(at(Some(2), 5, 10).position(), 5);
        assert_eq!(at(Some(2), 5, 10).lag(), 5);
        // Never negative, whatever the broker answers.
        assert_eq!(at(Some(12), 0, 10).lag(), 0);
    }
}
