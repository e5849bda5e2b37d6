//! Partitions held back for a retry: their record failed transiently, so the partition is
//! paused (the others are still consumed, and polling goes on, so the group never evicts this
//! member) and read again from that record once its backoff elapsed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::metrics::GroupTopicLabels;
use crate::{EventingMetrics, HandlerError, InboundEvent, RetryPolicy};

/// `(topic, partition)`.
pub(super) type Partition = (String, i32);

/// One partition waiting to try its record again.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The record to try again, and where the partition is read from when it resumes.
    pub(super) offset: i64,
    event_id: String,
    /// Failed tries so far.
    pub(super) attempts: u32,
    since: Instant,
    /// When the next try is due; `None` once the partition was resumed for it.
    due: Option<Instant>,
}

/// What the loop must do with a partition whose backoff elapsed.
pub(super) struct Due {
    pub(super) partition: Partition,
    pub(super) offset: i64,
}

/// The partitions waiting for a retry, and the metrics that show them.
#[derive(Debug)]
pub(super) struct Waitlist {
    group: String,
    metrics: EventingMetrics,
    waiting: HashMap<Partition, Waiting>,
}

fn partition_of(event: &InboundEvent) -> Partition {
    (event.topic.clone(), event.partition)
}

impl Waitlist {
    pub(super) fn new(group: &str, metrics: &EventingMetrics) -> Self {
        Self {
            group: group.to_owned(),
            metrics: metrics.clone(),
            waiting: HashMap::new(),
        }
    }

    /// Whether `event`, just received, is to be applied now. Records of a paused partition
    /// (fetched before the pause took effect) and records before the one to try again are
    /// dropped: the partition is read again from that record.
    pub(super) fn admits(&self, event: &InboundEvent) -> bool {
        match self.waiting.get(&partition_of(event)) {
            None => true,
            Some(w) => w.due.is_none() && event.offset >= w.offset,
        }
    }

    /// `event` failed transiently: its partition waits for the next try. Returns the failed
    /// tries so far and the backoff before the next.
    pub(super) fn hold(
        &mut self,
        event: &InboundEvent,
        failure: &HandlerError,
        retry: &RetryPolicy,
    ) -> (u32, Duration) {
        let partition = partition_of(event);
        let now = Instant::now();
        let waiting = self
            .waiting
            .entry(partition.clone())
            .and_modify(|w| {
                if w.offset == event.offset {
                    w.attempts += 1;
                } else {
                    // An earlier record of the partition was retried and applied (or the
                    // partition moved); this is a new one.
                    *w = Waiting {
                        offset: event.offset,
                        event_id: event.id.clone(),
                        attempts: 1,
                        since: now,
                        due: None,
                    };
                }
            })
            .or_insert_with(|| Waiting {
                offset: event.offset,
                event_id: event.id.clone(),
                attempts: 1,
                since: now,
                due: None,
            });
        let delay = retry.backoff(waiting.attempts);
        waiting.due = Some(now + delay);
        let attempts = waiting.attempts;
        tracing::warn!(
            consumer = %self.group, topic = %event.topic, partition = event.partition,
            offset = event.offset, event.id = %event.id, error = %failure, attempt = attempts,
            ?delay, "Record failed transiently; its partition waits and tries again."
        );
        self.refresh(&partition.0);
        (attempts, delay)
    }

    /// The failed tries of the partition's waiting record, if `event` is that record.
    pub(super) fn attempts(&self, event: &InboundEvent) -> u32 {
        self.waiting
            .get(&partition_of(event))
            .filter(|w| w.offset == event.offset)
            .map_or(0, |w| w.attempts)
    }

    /// `events` were settled (applied, skipped or dead-lettered): a partition waiting for one
    /// of them flows again.
    pub(super) fn settled(&mut self, events: &[&InboundEvent]) {
        for event in events {
            let partition = partition_of(event);
            if let Some(w) = self.waiting.get(&partition)
                && event.offset >= w.offset
            {
                tracing::info!(
                    consumer = %self.group, topic = %event.topic, partition = event.partition,
                    event.id = %w.event_id, attempts = w.attempts, waited = ?w.since.elapsed(),
                    "A record that failed transiently is settled; its partition flows again."
                );
                self.forget(&partition);
            }
        }
    }

    /// The partition left this member (a rebalance): its next owner reads it again from the
    /// committed offset.
    pub(super) fn forget(&mut self, partition: &Partition) {
        if self.waiting.remove(partition).is_some() {
            self.refresh(&partition.0);
        }
    }

    /// The partitions whose next try is due, marked as resumed.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        for (partition, w) in &mut self.waiting {
            if w.due.is_some_and(|at| at <= now) {
                w.due = None;
                due.push(Due {
                    partition: partition.clone(),
                    offset: w.offset,
                });
            }
        }
        due
    }

    /// `partition` could not be resumed now (a seek refused): try again after `delay`.
    pub(super) fn postpone(&mut self, partition: &Partition, delay: Duration) {
        if let Some(w) = self.waiting.get_mut(partition) {
            w.due = Some(Instant::now() + delay);
        }
    }

    /// When the next partition's backoff elapses.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.waiting.values().filter_map(|w| w.due).min()
    }

    /// Whether any partition waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Brings `shop_consumer_retrying_seconds` up to date (the loop calls it at least once a
    /// second while a partition waits).
    pub(super) fn tick(&self) {
        let mut topics: Vec<&str> = self.waiting.keys().map(|(t, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            self.refresh(topic);
        }
    }

    fn refresh(&self, topic: &str) {
        let (count, oldest) = self
            .waiting
            .iter()
            .filter(|((t, _), _)| t == topic)
            .fold((0_i64, Duration::ZERO), |(n, oldest), (_, w)| {
                (n + 1, oldest.max(w.since.elapsed()))
            });
        let labels = GroupTopicLabels {
            group: self.group.clone(),
            topic: topic.to_owned(),
        };
        self.metrics.retrying.get_or_create(&labels).set(count);
        self.metrics
            .retrying_for
            .get_or_create(&labels)
            .set(oldest.as_secs_f64());
    }
}
