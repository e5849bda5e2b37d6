//! The idempotent consumer: a consumer-group loop that applies each record once in effect,
//! retries transient failures without blocking other partitions, and sets aside records that
//! cannot be applied.
//!
//! - [`config`]: what it is told, and the librdkafka settings derived from that;
//! - [`error`]: [`HandlerError`] and which database errors are worth retrying;
//! - [`handler`]: the [`Handler`] trait and [`LockKey`];
//! - [`apply`]: one transaction per batch (inbox rows, locks, handlers, after-commit effects);
//! - [`waiting`]: partitions paused until their failed record's next try;
//! - [`dead_letter`]: the dead-letter topic, and the database when the topic is unwritable;
//! - [`context`]: librdkafka's callbacks (rebalances).
//!
//! The group's lag is measured apart, by [`crate::lag`].

mod apply;
mod config;
mod context;
mod dead_letter;
mod error;
mod handler;
mod retention;
mod waiting;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use self::config::{ConsumerConfig, Retention, StartPosition};
pub use self::error::HandlerError;
pub use self::handler::{Handler, LockKey};

use self::apply::{Outcome, Unsettled};
use self::dead_letter::NotSetAside;
use self::waiting::{Partition, Waitlist};
use crate::failpoint::Crashed;
use crate::lag::{LagMonitor, LagProbe};
use crate::metrics::{ErrorLabels, GroupTopicLabels, OutcomeLabels};
use crate::{InboundEvent, KafkaConfig};

/// A consumer-group loop that applies each record exactly once in effect.
///
/// For each batch of fetched records: begin a transaction, look up which records were applied
/// (inbox) or set aside (dead letter) before, take the locks the handler declares for the
/// batch ([`Handler::lock_keys`], in one global order), then per record insert `(consumer,
/// ce_id)` into the inbox and run the handler; commit, and only then store the offsets for the
/// next auto-commit. When a record fails, the records before it are applied again on their own
/// and the failure is settled apart:
///
/// - **transient**: the record's partition is paused and read again from that record after a
///   jittered exponential backoff (capped), for as long as the failure lasts. The other
///   partitions are consumed meanwhile, and polling never stops, so the group keeps this
///   member (`max.poll.interval.ms`). A database outage is transient for every partition of
///   the batch.
/// - **permanent** (the handler says so, the handler panicked, the record's attributes are
///   unusable, the database refuses the record's data): the record is dead-lettered and its
///   partition moves on.
pub struct Consumer<H> {
    pool: PgPool,
    consumer: Closing,
    dead_letters: FutureProducer,
    config: ConsumerConfig,
    handler: H,
    revoked: context::Revoked,
    unsettled: Unsettled,
    /// Until when the dead-letter topic is taken to be unwritable.
    dead_letter_topic_down: DeadLetterTopicDown,
    /// Started by [`Consumer::run`] as a task of its own.
    lag: Option<LagMonitor>,
}

/// The Kafka consumer, closed off the async runtime's threads when dropped.
///
/// Closing a librdkafka consumer blocks: it serves the last rebalance callbacks and waits for
/// the group coordinator. librdkafka 2.12 can block there for good: a consumer dropped while a
/// rebalance event was pending waits forever in that event's `assign` (seen about once in
/// five runs of the order service's API tests, whose runtime shuts down under running
/// consumers; with the eager and the cooperative protocol alike). [`Consumer::run`] closes it
/// on a thread of its own with a bound; this covers the other way a consumer ends, the `run`
/// future being dropped (a runtime shutting down, an aborted task): the close then runs on a
/// detached thread, which may stay behind, instead of hanging an async worker.
struct Closing(Option<StreamConsumer<context::Events>>);

impl std::ops::Deref for Closing {
    type Target = StreamConsumer<context::Events>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is only taken when closing")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let spawned = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(consumer));
            if let Err(error) = spawned {
                tracing::warn!(%error, "Could not close the Kafka consumer on a thread of its own.");
            }
        }
    }
}

/// See [`Consumer::dead_letter_topic_down`].
#[derive(Default)]
struct DeadLetterTopicDown(Mutex<Option<Instant>>);

impl DeadLetterTopicDown {
    fn get(&self) -> Option<Instant> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, until: Option<Instant>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why processing stopped early.
enum Stop {
    Shutdown,
    Crashed(Crashed),
}

impl From<Crashed> for Stop {
    fn from(c: Crashed) -> Self {
        Self::Crashed(c)
    }
}

impl<H: Handler> Consumer<H> {
    /// Creates the consumer and subscribes to the configured topics.
    ///
    /// Properties of `kafka` apply to this consumer too, except those it sets itself because
    /// its guarantees rest on them (offset storing and committing, the group, the assignment
    /// strategy, the timeouts that have a [`ConsumerConfig`] field): those are ignored, with a
    /// warning.
    ///
    /// # Errors
    /// When the Kafka clients cannot be created or the subscription is refused.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaConfig,
        config: ConsumerConfig,
        handler: H,
    ) -> KafkaResult<Self> {
        let (client, ignored) = config::client_config(kafka, &config);
        for (key, why) in ignored {
            tracing::warn!(consumer = %config.name, property = %key, reason = why, "Kafka property ignored by the consumer.");
        }
        let revoked = context::Revoked::default();
        let consumer: StreamConsumer<context::Events> =
            client.create_with_context(context::Events {
                group: config.group_id.clone(),
                metrics: config.metrics.clone(),
                revoked: revoked.clone(),
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        config
            .metrics
            .start_consumer(&config.group_id, &config.topics, &config.dead_letter_topic);
        let lag = LagMonitor {
            probe: LagProbe::new(kafka, &config.group_id)?,
            group: config.group_id.clone(),
            topics: config.topics.clone(),
            start: config.start,
            interval: config.lag_interval,
            metrics: config.metrics.clone(),
        };
        Ok(Self {
            pool,
            consumer: Closing(Some(consumer)),
            dead_letters: kafka.idempotent_producer()?,
            config,
            handler,
            revoked,
            unsettled: Unsettled::default(),
            dead_letter_topic_down: DeadLetterTopicDown::default(),
            lag: Some(lag),
        })
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in hand, commits the
    /// stored offsets and leaves the group.
    ///
    /// # Errors
    /// Only when a crash failpoint fires (tests); the group is then left without committing,
    /// as a dead process would.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Crashed> {
        tracing::info!(consumer = %self.config.name, topics = ?self.config.topics, "Consuming.");
        // The lag is measured by a task of its own, from the broker: whatever holds this loop
        // up (a handler that never returns, a partition that stays paused) cannot hold up the
        // measurement, and the lag it shows grows. It stops with this loop, however that ends
        // (the guard cancels it when `run` returns or its future is dropped).
        let lag_stop = CancellationToken::new();
        let _lag_guard = lag_stop.clone().drop_guard();
        if let Some(monitor) = self.lag.take() {
            tokio::spawn(monitor.run(lag_stop));
        }
        // The inbox and dead-letter rows past the retention window go on a timer of their own,
        // beside the loop: every consumer of every service bounds its tables, with nothing to
        // start. It stops with the consumer however `run` ends (a crash failpoint returns
        // early; a dropped `run` drops the guard).
        let sweeping = shutdown.child_token();
        let sweeper = tokio::spawn(retention::sweep(
            self.pool.clone(),
            self.config.name.clone(),
            self.config.group_id.clone(),
            self.config.retention.clone(),
            self.config.metrics.clone(),
            sweeping.clone(),
        ));
        let _sweeping = sweeping.clone().drop_guard();
        let mut waitlist = Waitlist::new(&self.config.group_id, &self.config.metrics);
        loop {
            self.forget_revoked(&mut waitlist);
            self.resume_due(&mut waitlist);
            waitlist.tick();
            // Wake for the next retry even when no record comes (every partition paused), and
            // every second while a partition waits (its age in the metrics).
            let now = Instant::now();
            let wake = match waitlist.next_due() {
                _ if waitlist.is_empty() => now + Duration::from_secs(3600),
                Some(due) => due.min(now + Duration::from_secs(1)),
                None => now + Duration::from_secs(1),
            };
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
                () = tokio::time::sleep_until(wake.into()) => continue,
            };
            let mut batch = match first {
                Ok(message) => vec![message.detach()],
                Err(error) => {
                    self.kafka_error(&error).await;
                    continue;
                }
            };
            while batch.len() < self.config.max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message.detach()),
                    Some(Err(error)) => {
                        self.kafka_error(&error).await;
                        break;
                    }
                    None => break,
                }
            }
            // A rebalance may have run inside those polls.
            self.forget_revoked(&mut waitlist);
            let fetched = Instant::now();
            let events: Vec<InboundEvent> = batch
                .iter()
                .map(InboundEvent::from_message)
                .filter(|e| waitlist.admits(e))
                .collect();
            match self
                .process(&events, fetched, &mut waitlist, &shutdown)
                .await
            {
                Ok(()) => {}
                Err(Stop::Shutdown) => break,
                Err(Stop::Crashed(crashed)) => return Err(crashed),
            }
        }
        // Drained. Leaving the group hands the partitions back, and librdkafka's auto-commit
        // then commits their stored offsets (those of what was applied), so the next owner
        // starts right after. Closing the consumer waits for that commit and the leave, bounded
        // by session.timeout.ms even when the broker is gone (a synchronous commit here would
        // wait for a dead broker forever, and a shutdown must end). It blocks, so it runs on a
        // blocking thread rather than an async worker.
        self.consumer.unsubscribe();
        let Self {
            mut consumer,
            config,
            ..
        } = self;
        let consumer = consumer.0.take();
        // On a thread of its own, not tokio's blocking pool: if librdkafka's close outlives
        // its bound, the runtime's shutdown must not wait for it.
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let closer = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = closed_tx.send(());
            });
        let patience = config.session_timeout + Duration::from_secs(5);
        if closer.is_ok() && tokio::time::timeout(patience, closed_rx).await.is_err() {
            tracing::warn!(consumer = %config.name, ?patience, "The Kafka consumer did not close in time; leaving it behind (records since the last commit will be redelivered and skipped by the inbox).");
        }
        sweeping.cancel();
        let _ = sweeper.await;
        tracing::info!(consumer = %config.name, "Consumer stopped.");
        Ok(())
    }

    async fn kafka_error(&self, error: &KafkaError) {
        tracing::warn!(%error, consumer = %self.config.name, "Kafka consumer error.");
        // Errors usually repeat until the broker is back; do not spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Drops what this member kept about partitions a rebalance took away (their retry state,
    /// the after-commit effects of their unanswered COMMITs): the next owner reads them again
    /// from the committed offset.
    fn forget_revoked(&self, waitlist: &mut Waitlist) {
        let revoked: Vec<Partition> = std::mem::take(
            &mut *self
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for partition in revoked {
            waitlist.forget(&partition);
            self.unsettled.forget(&partition);
        }
    }

    /// Reads the partitions whose backoff elapsed again from their failed record: a seek to it
    /// (the pause left librdkafka's position after the records it had already handed over),
    /// then the resume.
    fn resume_due(&self, waitlist: &mut Waitlist) {
        for due in waitlist.take_due(Instant::now()) {
            let (topic, partition) = &due.partition;
            let seek = self.consumer.seek(
                topic,
                *partition,
                Offset::Offset(due.offset),
                Timeout::After(Duration::from_secs(5)),
            );
            if let Err(error) = seek {
                // Not ours any more (a rebalance is under way) or not ready: try again soon;
                // the revocation, if that is what it is, clears the state.
                tracing::debug!(%error, topic, partition, "Could not seek a waiting partition; trying again.");
                waitlist.postpone(&due.partition, Duration::from_millis(500));
                continue;
            }
            if let Err(error) = self.consumer.resume(&one(topic, *partition)) {
                tracing::debug!(%error, topic, partition, "Could not resume a waiting partition; trying again.");
                waitlist.postpone(&due.partition, Duration::from_millis(500));
            }
        }
    }

    /// Applies `events` in order: runs of successes in one transaction each; a failure settled
    /// on its own (its partition held back for a retry, or the record dead-lettered), so a bad
    /// record never blocks its partition, and a failing one never blocks the others.
    async fn process(
        &self,
        events: &[InboundEvent],
        fetched: Instant,
        waitlist: &mut Waitlist,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut pending: Vec<&InboundEvent> = events.iter().collect();
        while !pending.is_empty() {
            let run = match self.apply(&pending).await {
                Ok(run) => run,
                Err(error) => {
                    // The database itself failed (not a handler): nothing was applied. Every
                    // partition of the batch waits and tries again from its first record; the
                    // records are not the problem, so they are never dead-lettered for it.
                    tracing::warn!(%error, consumer = %self.config.name, "Database unavailable; the batch's partitions wait and try again.");
                    let failure = HandlerError::transient(
                        anyhow::Error::new(error).context("database unavailable"),
                    );
                    let mut held: Vec<Partition> = Vec::new();
                    for event in pending {
                        let partition = (event.topic.clone(), event.partition);
                        if !held.contains(&partition) {
                            self.hold(waitlist, event, &failure);
                            held.push(partition);
                        }
                    }
                    return Ok(());
                }
            };
            let committed = run.applied.len();
            if committed > 0 {
                self.config.failpoints.hit("consumer.after_commit")?;
                let done = &pending[..committed];
                self.store_offsets(done);
                self.record_applied(done, &run.applied, fetched);
                waitlist.settled(done);
            }
            let Some(failure) = run.failure else {
                if committed == 0 {
                    break;
                }
                // All applied, or the batch was cut short for its locks: the rest goes next.
                pending.drain(..committed);
                continue;
            };
            let failed = pending[committed];
            self.record_failure(failed, &failure);
            let mut rest: Vec<&InboundEvent> = pending[committed + 1..].to_vec();
            if failure.is_transient() {
                self.hold(waitlist, failed, &failure);
                rest.retain(|e| {
                    (e.topic.as_str(), e.partition) != (failed.topic.as_str(), failed.partition)
                });
            } else {
                let attempts = waitlist.attempts(failed) + 1;
                match self.dead_letter(failed, &failure, attempts, shutdown).await {
                    Ok(()) => {
                        self.store_offsets(&[failed]);
                        waitlist.settled(&[failed]);
                    }
                    Err(NotSetAside::Stop(stop)) => return Err(stop),
                    Err(NotSetAside::Database(error)) => {
                        let failure = HandlerError::transient(
                            anyhow::Error::new(error)
                                .context("database unavailable while dead-lettering"),
                        );
                        self.hold(waitlist, failed, &failure);
                        rest.retain(|e| {
                            (e.topic.as_str(), e.partition)
                                != (failed.topic.as_str(), failed.partition)
                        });
                    }
                }
            }
            pending = rest;
        }
        Ok(())
    }

    /// `event` failed transiently: pause its partition until the next try is due.
    fn hold(&self, waitlist: &mut Waitlist, event: &InboundEvent, failure: &HandlerError) {
        waitlist.hold(event, failure, &self.config.retry);
        if let Err(error) = self.consumer.pause(&one(&event.topic, event.partition)) {
            // Not assigned any more: its next owner reads it from the committed offset.
            tracing::debug!(%error, topic = %event.topic, partition = event.partition, "Could not pause the partition (revoked?).");
            waitlist.forget(&(event.topic.clone(), event.partition));
        }
    }

    fn count(&self, event: &InboundEvent, outcome: &'static str) {
        self.config
            .metrics
            .consumed
            .get_or_create(&OutcomeLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts and times records whose transaction committed.
    fn record_applied(
        &self,
        events: &[&InboundEvent],
        applied: &[apply::Applied],
        fetched: Instant,
    ) {
        let metrics = &self.config.metrics;
        let now = Utc::now();
        for (event, applied) in events.iter().zip(applied) {
            self.count(event, applied.outcome.label());
            let labels = GroupTopicLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
            };
            metrics
                .process_duration
                .get_or_create(&labels)
                .observe(fetched.elapsed().as_secs_f64());
            if applied.outcome == Outcome::Applied
                && let Some(appended) = event
                    .time
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                let delay = (now - appended.with_timezone(&Utc)).as_seconds_f64();
                metrics
                    .event_delay
                    .get_or_create(&labels)
                    .observe(delay.max(0.0));
            }
        }
    }

    fn record_failure(&self, event: &InboundEvent, failure: &HandlerError) {
        self.config
            .metrics
            .handler_errors
            .get_or_create(&ErrorLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
                kind: failure.kind(),
            })
            .inc();
    }

    /// Stores, per partition, the offset after the last of `events` for the next commit, with
    /// `rd_kafka_offsets_store` (the list API; the single-offset one is deprecated).
    ///
    /// The leader epoch of each record cannot be given: rust-rdkafka 0.39 exposes neither
    /// `rd_kafka_message_leader_epoch` nor `rd_kafka_topic_partition_set_leader_epoch`, and
    /// this workspace forbids `unsafe`. Commits therefore carry no epoch (-1), as before, and
    /// rest on the brokers' own protection against unclean leader election (disabled).
    fn store_offsets(&self, events: &[&InboundEvent]) {
        let mut next: Vec<(&str, i32, i64)> = Vec::new();
        for event in events {
            match next
                .iter_mut()
                .find(|(t, p, _)| *t == event.topic && *p == event.partition)
            {
                Some(entry) => entry.2 = entry.2.max(event.offset + 1),
                None => next.push((&event.topic, event.partition, event.offset + 1)),
            }
        }
        let mut offsets = TopicPartitionList::with_capacity(next.len());
        for (topic, partition, offset) in next {
            if let Err(error) =
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(%error, topic, partition, offset, "Offset not stored.");
            }
        }
        // Fails only for partitions revoked meanwhile; their new owner re-reads the records and
        // the inbox skips them.
        if let Err(error) = self.consumer.store_offsets(&offsets) {
            tracing::debug!(%error, "Offsets not stored (partitions revoked).");
        }
    }
}

/// A list of one partition.
fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(1);
    list.add_partition(topic, partition);
    list
}
