//! Deleting the inbox and dead-letter rows older than the consumer's [`Retention`] window, so
//! the tables stay bounded however long the service runs.

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
    retention: Retention,
    metrics: EventingMetrics,
    shutdown: CancellationToken,
) {
    let window_ms = i64::try_from(retention.window.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        for (table, statement) in [
            ("eventing_inbox", INBOX),
            ("eventing_dead_letter", DEAD_LETTERS),
        ] {
            match delete_old(
                &pool,
                statement,
                &consumer,
                window_ms,
                retention.batch,
                &shutdown,
            )
            .await
            {
                Ok(0) => {}
                Ok(rows) => {
                    metrics.count_retention_deleted(&consumer, table, rows);
                    tracing::debug!(%consumer, table, rows, "Deleted rows past the retention window.");
                }
                Err(error) => {
                    tracing::warn!(%consumer, table, %error, "Could not delete rows past the retention window; trying again at the next sweep.");
                }
            }
        }
    }
}

const INBOX: &str = "DELETE FROM eventing_inbox WHERE (consumer, event_id) IN ( \
     SELECT consumer, event_id FROM eventing_inbox \
     WHERE consumer = $1 AND processed_at < now() - $2 * interval '1 millisecond' \
     ORDER BY processed_at LIMIT $3)";

// Only dead letters whose copy reached the dead-letter topic: the others are the only copy.
const DEAD_LETTERS: &str = "DELETE FROM eventing_dead_letter WHERE (consumer, event_id) IN ( \
     SELECT consumer, event_id FROM eventing_dead_letter \
     WHERE consumer = $1 AND published AND failed_at < now() - $2 * interval '1 millisecond' \
     ORDER BY failed_at LIMIT $3)";

/// Deletes in batches until a batch comes back short (or shutdown).
async fn delete_old(
    pool: &PgPool,
    statement: &'static str,
    consumer: &str,
    window_ms: i64,
    batch: i64,
    shutdown: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let rows = sqlx::query(statement)
            .bind(consumer)
            .bind(window_ms)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += rows;
        if i64::try_from(rows).unwrap_or(i64::MAX) < batch || shutdown.is_cancelled() {
            return Ok(deleted);
        }
        // A backlog of old rows (a first start with the window, a lowered window) goes in
        // small steps that leave the database to the consumer in between.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
