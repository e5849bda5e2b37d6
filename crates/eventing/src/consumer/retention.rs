//! Deleting the inbox and dead-letter rows older than the consumer's [`Retention`] window, so
//! the tables stay bounded however long the service runs.
//!
//! Why deleting them is safe: an inbox row only matters while a second copy of its record can
//! still arrive, and every copy arrives from the topic. Records leave a topic by retention: a
//! segment is deleted once its newest record is older than the topic's `retention.ms`, so a
//! record can be read for at most `retention.ms + segment.ms` after the relay published it
//! (its Kafka timestamp), and its inbox row was written after that. With a window at least that
//! long, no copy of a record whose row was deleted can still come from the broker: not a
//! redelivery, not a relay's second publication, not a replay from the earliest offset.
//!
//! What the window does not cover: records that come back from outside the topic. A replay of
//! an older backup or archive of the topic (re-produced records, a restored cluster) carries
//! `ce_id`s the inbox may have forgotten, and those records are applied again. Replay such a
//! copy only from `now - window` on (`--to-datetime`), or not at all. A database restored
//! from an older backup is safe: its inbox lacks the rows of what it also lost (the effects),
//! and its rows past the window belong to records the topic no longer holds.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::config::Retention;
use crate::EventingMetrics;

/// Sweeps `consumer`'s old rows every `retention.every` until `shutdown`. A failed sweep (the
/// database away) is logged and tried again at the next one: nothing depends on its timing.
pub(super) async fn sweep(
    pool: PgPool,
    consumer: String,
    group: String,
    retention: Retention,
    metrics: EventingMetrics,
    shutdown: CancellationToken,
) {
    let window = retention.window.as_secs_f64();
    let batch = i64::from(retention.batch.max(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        for (table, statement) in [
            ("eventing_inbox", INBOX),
            ("eventing_dead_letter", DEAD_LETTERS),
        ] {
            let deleted = delete_old(
                &pool,
                statement,
                &consumer,
                window,
                batch,
                &shutdown,
                |rows| {
                    metrics.count_retention_deleted(&group, table, rows);
                },
            )
            .await;
            match deleted {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::debug!(%consumer, table, rows, "Deleted rows past the retention window.");
                }
                Err(error) => {
                    tracing::warn!(%consumer, table, %error, "Could not delete rows past the retention window; trying again at the next sweep.");
                }
            }
        }
    }
}

// Oldest first through the (consumer, processed_at) index, one batch per statement. SKIP
// LOCKED: the replicas of a service all sweep the same rows; each takes others than the one
// already deleting, instead of waiting for it.
const INBOX: &str = "DELETE FROM eventing_inbox WHERE (consumer, event_id) IN ( \
     SELECT consumer, event_id FROM eventing_inbox \
     WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) \
     ORDER BY processed_at LIMIT $3 FOR UPDATE SKIP LOCKED)";

// Only dead letters whose copy reached the dead-letter topic: the others are the record's only
// copy, kept until an operator re-drives or drops it.
const DEAD_LETTERS: &str = "DELETE FROM eventing_dead_letter WHERE (consumer, event_id) IN ( \
     SELECT consumer, event_id FROM eventing_dead_letter \
     WHERE consumer = $1 AND published AND failed_at < now() - make_interval(secs => $2) \
     ORDER BY failed_at LIMIT $3 FOR UPDATE SKIP LOCKED)";

/// Deletes in batches (each its own short transaction) until a batch comes back short, or
/// shutdown; `deleted` is told each batch's count as it commits.
async fn delete_old(
    pool: &PgPool,
    statement: &'static str,
    consumer: &str,
    window_secs: f64,
    batch: i64,
    shutdown: &CancellationToken,
    deleted: impl Fn(u64),
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let rows = sqlx::query(statement)
            .bind(consumer)
            .bind(window_secs)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        if rows > 0 {
            deleted(rows);
        }
        total += rows;
        if i64::try_from(rows).unwrap_or(i64::MAX) < batch || shutdown.is_cancelled() {
            return Ok(total);
        }
        // A backlog of old rows (a first start with the window, a lowered window) goes in
        // small steps that leave the database to the consumer in between.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
