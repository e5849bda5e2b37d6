//! Applying records: one database transaction per batch, holding each record's inbox row and
//! its handler's effects, with the batch's declared locks taken first in one global order.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sqlx::PgConnection;
use tracing::Instrument;

use super::{Consumer, Handler, LockKey};
use crate::commit::Deferred;
use crate::consumer::error::is_transient;
use crate::consumer::waiting::Partition;
use crate::metrics::GroupLabels;
use crate::{HandlerError, InboundEvent};

/// Most advisory locks one batch takes: a batch whose records declare more distinct keys is
/// cut before the record that would exceed it (a single record takes all its keys). PostgreSQL
/// keeps every lock a transaction holds in a shared table sized for about
/// `max_locks_per_transaction` (64) per connection; a few batches of hundreds of keys each
/// (200 orders of a wide catalog) would fill it, and "out of shared memory" is transient:
/// retried forever.
const MAX_BATCH_LOCKS: usize = 256;

/// The outcome of applying a prefix of a batch.
pub(super) struct Run {
    /// The records of the slice that were committed, from its start.
    pub(super) applied: Vec<Applied>,
    /// The failure that ended the run, on the record after the committed ones.
    pub(super) failure: Option<HandlerError>,
}

/// What became of a record whose transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The handler ran and its effects committed with the inbox row.
    Applied,
    /// The inbox already had it: applied before.
    Duplicate,
    /// It has a dead-letter row: set aside before, and stays so until the row is deleted.
    Skipped,
    /// Not a record the handler handles ([`Handler::handles`]): passed over, no inbox row.
    Ignored,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Skipped => "skipped",
            Self::Ignored => "ignored",
        }
    }
}

/// A record whose inbox row (and effect, unless a duplicate) is in the transaction.
pub(super) struct Applied {
    pub(super) outcome: Outcome,
    deferred: Deferred,
}

impl Applied {
    fn without_effects(outcome: Outcome) -> Self {
        Self {
            outcome,
            deferred: Deferred::default(),
        }
    }
}

/// What an earlier transaction already decided about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Applied,
    DeadLettered,
    /// Dead-lettered, and this delivery is an operator's replay of it for this consumer with a
    /// higher count than the row's (see [`InboundEvent::replay_for`]): applied as if new, and
    /// the dead-letter row deleted with its effects.
    Replayed,
}

/// `after_commit` effects of records whose COMMIT got no answer (the connection broke during
/// it): whether they committed is unknown until the record is tried again. If the retry finds
/// the inbox row, the transaction did commit and the effects run then; if it applies the record
/// anew, they are dropped (the new try's own effects run). They live in memory: a process that
/// dies meanwhile loses them, as it loses every counter it had.
#[derive(Default)]
pub(super) struct Unsettled(std::sync::Mutex<HashMap<String, (Partition, Deferred)>>);

impl Unsettled {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Partition, Deferred)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The record committed after all: its effects run now.
    fn committed(&self, id: &str) {
        let effects = self.lock().remove(id);
        if let Some((_, deferred)) = effects {
            tracing::info!(event.id = %id, "The transaction whose COMMIT got no answer had committed; running its after-commit effects.");
            deferred.run();
        }
    }

    /// The record is being applied anew: the earlier try did not commit.
    fn rolled_back(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The partition left this member: its records are settled elsewhere.
    pub(super) fn forget(&self, partition: &Partition) {
        self.lock().retain(|_, (p, _)| p != partition);
    }
}

impl<H: Handler> Consumer<H> {
    /// Applies a prefix of `events` in one transaction, stopping at the first failing record.
    /// `Err` only when the database failed (nothing committed).
    ///
    /// The records go in one transaction without savepoints (the common case, where no handler
    /// fails, costs two statements less per record). When a record fails, everything is rolled
    /// back and the records before it are applied again on their own, so that the failing
    /// record's handler runs once per try (the caller settles the failure).
    pub(super) async fn apply(&self, events: &[&InboundEvent]) -> Result<Run, sqlx::Error> {
        // Records of types the handler ignores have no effect to protect from a second
        // delivery, so a batch of nothing else takes no transaction, no inbox look-up, not
        // even a connection (about 7 of the 16 consumptions of an order are such batches:
        // three round trips each, for nothing). A usable record only: an unusable one is
        // dead-lettered, which takes the database.
        if events
            .iter()
            .all(|e| e.rejected.is_none() && !self.handler.handles(e))
        {
            return Ok(Run {
                applied: events
                    .iter()
                    .map(|_| Applied::without_effects(Outcome::Ignored))
                    .collect(),
                failure: None,
            });
        }
        let mut end = events.len();
        let mut failure = None;
        let mut run = loop {
            if end == 0 {
                break Run {
                    applied: Vec::new(),
                    failure,
                };
            }
            match self.apply_together(&events[..end]).await? {
                Ok(applied) => {
                    // Cut short for its locks: the failure found further on is the next run's.
                    let failure = if applied.len() == end { failure } else { None };
                    break Run { applied, failure };
                }
                Err((at, first)) => {
                    end = at;
                    failure = Some(first);
                }
            }
        };
        if !run.applied.is_empty() {
            self.config
                .metrics
                .batch_size
                .get_or_create(&GroupLabels {
                    group: self.config.group_id.clone(),
                })
                .observe(run.applied.len() as f64);
        }
        for applied in &mut run.applied {
            std::mem::take(&mut applied.deferred).run();
        }
        Ok(run)
    }

    /// The records of `events` in one transaction: all committed (or the prefix whose locks fit
    /// in [`MAX_BATCH_LOCKS`]), or (at the first failure) all rolled back, with the failing
    /// record's index and failure.
    async fn apply_together(
        &self,
        events: &[&InboundEvent],
    ) -> Result<Result<Vec<Applied>, (usize, HandlerError)>, sqlx::Error> {
        let mut events = events;
        let mut tx = self.pool.begin().await?;
        let known = self.known(&mut tx, events).await?;
        for (id, known) in &known {
            if *known == Known::Applied {
                self.unsettled.committed(id);
            }
        }

        // The batch's locks, all of them, in one global order, before any record takes one.
        let mut keys: BTreeSet<LockKey> = BTreeSet::new();
        for (at, event) in events.iter().enumerate() {
            let settled = known.get(&event.id).is_some_and(|k| *k != Known::Replayed);
            if settled || event.rejected.is_some() || !self.handler.handles(event) {
                continue;
            }
            let declared = AssertUnwindSafe(self.handler.lock_keys(&mut tx, event))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(HandlerError::panicked(&*panic)));
            match declared {
                Ok(declared) => {
                    let fresh = declared.iter().filter(|k| !keys.contains(k)).count();
                    if at > 0 && keys.len() + fresh > MAX_BATCH_LOCKS {
                        // The rest goes in the next transaction.
                        events = &events[..at];
                        break;
                    }
                    keys.extend(declared);
                }
                Err(failure) => {
                    tx.rollback().await?;
                    return Ok(Err((at, failure)));
                }
            }
        }
        if !keys.is_empty() {
            let (high, low): (Vec<i32>, Vec<i32>) = keys.iter().map(|k| k.parts()).unzip();
            // unnest yields the arrays in order (the set's), and the locks are taken row by
            // row in it.
            sqlx::query(
                "SELECT pg_advisory_xact_lock(h, l) FROM unnest($1::int4[], $2::int4[]) AS k(h, l)",
            )
            .bind(&high)
            .bind(&low)
            .execute(&mut *tx)
            .await?;
        }

        let mut applied = Vec::with_capacity(events.len());
        for (at, event) in events.iter().enumerate() {
            if at == 1 {
                // A crash here loses the uncommitted batch; in-process it counts as an outage.
                self.config
                    .failpoints
                    .hit("consumer.mid_batch")
                    .map_err(|c| sqlx::Error::Protocol(c.to_string()))?;
            }
            match self
                .apply_one(&mut tx, event, known.get(&event.id).copied())
                .await?
            {
                Ok(one) => applied.push(one),
                Err(failure) => {
                    // The effects deferred so far go with the transaction.
                    tx.rollback().await?;
                    return Ok(Err((at, failure)));
                }
            }
        }
        if let Err(error) = tx.commit().await {
            // An answer from the server means the transaction was rolled back. No answer
            // (the connection broke) leaves it unknown: keep the effects until a retry tells.
            if !matches!(error, sqlx::Error::Database(_)) {
                tracing::warn!(%error, consumer = %self.config.name, "The COMMIT of a batch got no answer; whether it committed is known when its records are tried again.");
                let mut unsettled = self.unsettled.lock();
                for (event, one) in events.iter().zip(applied) {
                    if one.outcome == Outcome::Applied {
                        unsettled.insert(
                            event.id.clone(),
                            ((event.topic.clone(), event.partition), one.deferred),
                        );
                    }
                }
            }
            return Err(error);
        }
        Ok(Ok(applied))
    }

    /// Which of `events` an earlier transaction applied (inbox) or set aside (dead letter):
    /// one statement for the whole batch, in its transaction.
    async fn known(
        &self,
        tx: &mut PgConnection,
        events: &[&InboundEvent],
    ) -> Result<HashMap<String, Known>, sqlx::Error> {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let rows: Vec<(String, bool, i32)> = sqlx::query_as(
            "SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = $1 AND event_id = ANY($2) \
             UNION ALL \
             SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = $1 AND event_id = ANY($2)",
        )
        .bind(&self.config.name)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut known = HashMap::new();
        let mut replays = HashMap::new();
        for (id, in_inbox, counted) in rows {
            if !in_inbox {
                replays.insert(id.clone(), counted);
            }
            let entry = known.entry(id).or_insert(Known::DeadLettered);
            if in_inbox {
                // Re-driven and applied after it was dead-lettered: applied.
                *entry = Known::Applied;
            }
        }
        // An operator's replay for this consumer, newer than what the row counts, goes through.
        for event in events {
            let newer = match (replays.get(&event.id), event.replay_for(&self.config.name)) {
                (Some(counted), Some(replay)) => replay > *counted,
                _ => false,
            };
            if newer && known.get(&event.id) == Some(&Known::DeadLettered) {
                known.insert(event.id.clone(), Known::Replayed);
            }
        }
        Ok(known)
    }

    /// Claims `event` in the inbox and runs the handler. The outer `Result` is the database
    /// failing (infrastructure), the inner one the record's verdict: the handler's, or a
    /// permanent failure when the record itself is unusable (its attributes, or data the
    /// inbox write refuses).
    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
        known: Option<Known>,
    ) -> Result<Result<Applied, HandlerError>, sqlx::Error> {
        // The "Process" span of the OpenTelemetry conventions for Kafka (v1.44.0): the group
        // is the Kafka group id (not the inbox name, which a replay under a new group keeps),
        // the partition id a string; `error.type` says how the record failed: `transient`,
        // `permanent` (the handler's verdict, or a record that cannot be applied) or
        // `database` (the database itself failed).
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", event.topic),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %event.topic,
            messaging.consumer.group.name = %self.config.group_id,
            messaging.destination.partition.id = %event.partition,
            messaging.kafka.offset = event.offset,
            messaging.message.id = %event.id,
            messaging.kafka.message.key = event.key.as_deref(),
            error.type = tracing::field::Empty,
            event.type = event.event_type.as_deref().unwrap_or(""),
            duplicate = tracing::field::Empty,
        );
        // The child of the record's creation context (the producer's `send` span), and linked
        // to it.
        shop_telemetry::continue_message_trace(
            &span,
            event
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), std::str::from_utf8(v).ok()?))),
        );
        let failed = span.clone();
        let result = async {
            match known {
                Some(Known::Applied) => {
                    tracing::Span::current().record("duplicate", true);
                    tracing::debug!("Already applied; skipping.");
                    return Ok(Ok(Applied::without_effects(Outcome::Duplicate)));
                }
                Some(Known::DeadLettered) => {
                    tracing::info!(event.id = %event.id, "Dead-lettered before; skipping (replay it with shopctl dlq replay, or delete its eventing_dead_letter row, to apply it).");
                    return Ok(Ok(Applied::without_effects(Outcome::Skipped)));
                }
                Some(Known::Replayed) => {
                    tracing::info!(event.id = %event.id, "An operator's replay of a dead letter; applying it.");
                }
                None => {}
            }
            if let Some(rejected) = &event.rejected {
                return Ok(Err(HandlerError::permanent(anyhow::anyhow!(
                    "unusable record: {rejected}"
                ))));
            }
            if !self.handler.handles(event) {
                // Nothing to protect from a second delivery: no inbox row.
                return Ok(Ok(Applied::without_effects(Outcome::Ignored)));
            }
            let claimed = sqlx::query(
                "INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(&event.id)
            .bind(event.event_type.as_deref().unwrap_or(""))
            .bind(&event.topic)
            .bind(event.partition)
            .bind(event.offset)
            .execute(&mut *conn)
            .await;
            let claimed = match claimed {
                Ok(done) => done.rows_affected() == 1,
                // The database refused this record's own data: no retry can change that.
                Err(error) if !is_transient(&error) => {
                    return Ok(Err(HandlerError::permanent(
                        anyhow::Error::new(error).context("the inbox refused the record"),
                    )));
                }
                Err(error) => return Err(error),
            };
            tracing::Span::current().record("duplicate", !claimed);
            if !claimed {
                // Applied concurrently (another replica, during a rebalance).
                return Ok(Ok(Applied::without_effects(Outcome::Duplicate)));
            }
            self.unsettled.rolled_back(&event.id);
            // A panic is a bug the same record will hit again: dead-letter it rather than end
            // the process (and crash-loop on it after every restart).
            let (outcome, deferred) = Deferred::collect(
                AssertUnwindSafe(self.handler.handle(conn, event)).catch_unwind(),
            )
            .await;
            let outcome = outcome.unwrap_or_else(|panic| Err(HandlerError::panicked(&*panic)));
            if outcome.is_ok() && known == Some(Known::Replayed) {
                // Applied at last: its dead letter goes with the effects, in their transaction.
                sqlx::query("DELETE FROM eventing_dead_letter WHERE consumer = $1 AND event_id = $2")
                    .bind(&self.config.name)
                    .bind(&event.id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(outcome.map(|()| Applied {
                outcome: Outcome::Applied,
                deferred,
            }))
        }
        .instrument(span)
        .await;
        let error_type = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(failure)) => Some(failure.kind()),
            Err(_) => Some("database"),
        };
        if let Some(error_type) = error_type {
            failed.record("error.type", error_type);
            failed.record("otel.status_code", "ERROR");
        }
        result
    }
}
