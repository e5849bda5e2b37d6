//! Events the relay gave up on, and what an operator does with them.
//!
//! The relay parks a row once its publishing attempts are exhausted (a topic that was never
//! created, a record the broker refuses). A parked row stays in `eventing_outbox` with its
//! error; the later rows of its key wait behind it, since publishing them would reorder the key.
//! Nothing else stops. Once the cause is fixed (the topic created, the broker's limit raised),
//! [`retry_parked`] hands the rows back to the relay; [`drop_parked`] deletes those that must
//! never be published, which releases the rows behind them.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A parked event, as [`parked_events`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ParkedEvent {
    /// The outbox row (what [`ParkedEvents::Ids`] names).
    pub id: i64,
    /// `ce_id`.
    pub event_id: uuid::Uuid,
    pub topic: String,
    pub partition_key: String,
    pub event_type: String,
    /// Failed attempts.
    pub attempts: i32,
    /// The last attempt's error, as librdkafka reported it.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
    /// Later events of the same key waiting behind this one.
    pub waiting_behind: i64,
}

/// Which parked events an operation applies to.
#[derive(Clone, Copy, Debug)]
pub enum ParkedEvents<'a> {
    /// Every parked event.
    All,
    /// The parked events of one topic.
    Topic(&'a str),
    /// These outbox rows (rows that are not parked are left alone).
    Ids(&'a [i64]),
}

impl ParkedEvents<'_> {
    fn binds(self) -> (bool, Option<String>, Vec<i64>) {
        match self {
            Self::All => (true, None, Vec::new()),
            Self::Topic(topic) => (false, Some(topic.to_owned()), Vec::new()),
            Self::Ids(ids) => (false, None, ids.to_vec()),
        }
    }
}

/// The parked events, oldest first.
///
/// # Errors
/// Database errors.
pub async fn parked_events<'c>(db: impl PgExecutor<'c>) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.event_id, p.topic, p.partition_key, p.event_type, p.attempts, p.last_error, \
                p.created_at, p.parked_at, count(w.id) AS waiting_behind \
         FROM eventing_outbox AS p \
         LEFT JOIN eventing_outbox AS w \
           ON w.topic = p.topic AND w.partition_key = p.partition_key AND w.id > p.id \
         WHERE p.parked_at IS NOT NULL AND p.attempts > 0 \
         GROUP BY p.id \
         ORDER BY p.id",
    )
    .fetch_all(db)
    .await
}

/// Hands the selected parked events back to the relay, with their attempts reset: it publishes
/// them (and then the events waiting behind them) at its next round. Returns how many.
///
/// # Errors
/// Database errors.
pub async fn retry_parked<'c>(
    db: impl PgExecutor<'c>,
    which: ParkedEvents<'_>,
) -> Result<u64, sqlx::Error> {
    let (all, topic, ids) = which.binds();
    // `last_error` stays, as the history of why it was parked.
    let done = sqlx::query(
        "UPDATE eventing_outbox SET attempts = 0, retry_at = NULL, parked_at = NULL \
         WHERE parked_at IS NOT NULL AND attempts > 0 AND ($1 OR topic = $2 OR id = ANY($3))",
    )
    .bind(all)
    .bind(topic)
    .bind(ids)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes the selected parked events: they are never published. The events waiting behind them
/// are published next. Returns how many were deleted.
///
/// # Errors
/// Database errors.
pub async fn drop_parked<'c>(
    db: impl PgExecutor<'c>,
    which: ParkedEvents<'_>,
) -> Result<u64, sqlx::Error> {
    let (all, topic, ids) = which.binds();
    let done = sqlx::query(
        "DELETE FROM eventing_outbox \
         WHERE parked_at IS NOT NULL AND attempts > 0 AND ($1 OR topic = $2 OR id = ANY($3))",
    )
    .bind(all)
    .bind(topic)
    .bind(ids)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
