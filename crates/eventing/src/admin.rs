//! What an operator does with a service's eventing tables: read and re-drive dead letters,
//! purge them, republish records through the outbox, look at the outbox. The admin gRPC API
//! (`shop_runtime::admin`) and `shopctl` are built on this; every change is recorded in
//! `eventing_admin_audit` in the same transaction as the change itself.
//!
//! # A replay, safe by construction
//!
//! A dead-lettered record is replayed by publishing it again to its source topic, unchanged
//! (ce_id, type, source, key, payload, trace context), with two more headers:
//! [`headers::REPLAY_CONSUMER`] (the consumer it is replayed for) and [`headers::REPLAY_COUNT`]
//! (which replay this is: the row's `replays` + 1). Nothing is deleted beforehand:
//!
//! - the consumer named applies it despite its dead-letter row, because the count is higher than
//!   the row's, and deletes the row in the transaction that applies it: applied once, and the
//!   dead letter gone exactly when the effect is there;
//! - if it fails again, it is dead-lettered again and the row's `replays` becomes the count:
//!   publishing the same replay twice applies nothing twice, and [`prepare_replay`] holds a
//!   record back once `replays` reached the limit (unless forced), so a replay cannot loop;
//! - every other consumer of the topic has it in its inbox (a duplicate) or has a dead-letter
//!   row of its own for it (skipped): the replay is for one consumer only;
//! - if publishing fails, nothing changed: the dead letter is still there, to replay again.
//!
//! The record is published through the outbox of the service that owns the topic (the only
//! identity the broker lets write it), by [`republish`].

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use crate::headers;
use crate::parked::{ParkedEvent, ParkedEvents, drop_parked, parked_events, retry_parked};

/// Which dead letters: every field set narrows the selection.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    pub consumer: Option<String>,
    pub event_type: Option<String>,
    /// The record key (the order id, for every topic of the suite).
    pub order_id: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
    /// These ids only (none: any).
    pub event_ids: Vec<String>,
}

/// A row of `eventing_dead_letter`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeadLetter {
    pub consumer: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub dead_letter_topic: String,
    pub published: bool,
    pub error: String,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
    pub replays: i32,
    pub record_key: Option<Vec<u8>>,
    /// `None` in listings (and for rows dead-lettered before the record was kept).
    pub payload: Option<Vec<u8>>,
    pub header_names: Option<Vec<String>>,
    pub header_values: Option<Vec<Vec<u8>>>,
    /// Whether payload and headers were kept: only then can it be replayed.
    pub record_kept: bool,
}

impl DeadLetter {
    /// The record's headers, in order.
    pub fn headers(&self) -> Vec<(&str, &[u8])> {
        match (&self.header_names, &self.header_values) {
            (Some(names), Some(values)) => names
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(Vec::as_slice))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The first header named `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .into_iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The columns of a listing (`payload` left out) and of a single dead letter.
const LISTED: &str = "consumer, event_id, event_type, topic, kafka_partition, kafka_offset, dead_letter_topic, \
     published, error, attempts, failed_at, replays, record_key, NULL::bytea AS payload, \
     header_names, header_values, (payload IS NOT NULL AND header_names IS NOT NULL) AS record_kept";
const WHOLE: &str = "consumer, event_id, event_type, topic, kafka_partition, kafka_offset, dead_letter_topic, \
     published, error, attempts, failed_at, replays, record_key, payload, \
     header_names, header_values, (payload IS NOT NULL AND header_names IS NOT NULL) AS record_kept";
/// The filter, as binds $1..$6.
const MATCHING: &str = "($1::text IS NULL OR consumer = $1) \
     AND ($2::text IS NULL OR event_type = $2) \
     AND ($3::text IS NULL OR record_key = convert_to($3, 'UTF8')) \
     AND ($4::timestamptz IS NULL OR failed_at >= $4) \
     AND ($5::timestamptz IS NULL OR failed_at < $5) \
     AND (cardinality($6::text[]) = 0 OR event_id = ANY($6))";

/// The selected dead letters, newest first, at most `limit` (payloads left out).
///
/// # Errors
/// Database errors.
pub async fn dead_letters<'c>(
    db: impl PgExecutor<'c>,
    filter: &DeadLetterFilter,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let sql = format!(
        "SELECT {LISTED} FROM eventing_dead_letter WHERE {MATCHING} ORDER BY failed_at DESC, event_id LIMIT $7"
    );
    bind_filter(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// One dead letter, with its record.
///
/// # Errors
/// Database errors.
pub async fn dead_letter<'c>(
    db: impl PgExecutor<'c>,
    consumer: &str,
    event_id: &str,
) -> Result<Option<DeadLetter>, sqlx::Error> {
    let sql =
        format!("SELECT {WHOLE} FROM eventing_dead_letter WHERE consumer = $1 AND event_id = $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(consumer)
        .bind(event_id)
        .fetch_optional(db)
        .await
}

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q DeadLetterFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.consumer.as_deref())
        .bind(filter.event_type.as_deref())
        .bind(filter.order_id.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.event_ids)
}

/// Records what `actor` did, in the caller's transaction.
///
/// # Errors
/// Database errors.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    consumer: Option<&str>,
    event_id: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO eventing_admin_audit (actor, action, consumer, event_id, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(consumer)
    .bind(event_id)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row of `eventing_admin_audit`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub consumer: Option<String>,
    pub event_id: Option<String>,
    pub detail: serde_json::Value,
}

/// The audit records, newest first.
///
/// # Errors
/// Database errors.
pub async fn audit_records<'c>(
    db: impl PgExecutor<'c>,
    limit: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, consumer, event_id, detail FROM eventing_admin_audit ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes the selected dead letters (unless `dry_run`), each recorded as `dlq.purge`; returns
/// them. A purged record is applied by a later replay of its source topic.
///
/// # Errors
/// Database errors.
pub async fn purge_dead_letters(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let sql = if dry_run {
        format!(
            "SELECT {LISTED} FROM eventing_dead_letter WHERE {MATCHING} ORDER BY failed_at DESC, event_id"
        )
    } else {
        format!("DELETE FROM eventing_dead_letter WHERE {MATCHING} RETURNING {LISTED}")
    };
    let purged: Vec<DeadLetter> = bind_filter(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
        .fetch_all(&mut *conn)
        .await?;
    if !dry_run {
        for dead in &purged {
            audit(
                conn,
                actor,
                "dlq.purge",
                Some(&dead.consumer),
                Some(&dead.event_id),
                json!({
                    "event_type": dead.event_type,
                    "topic": dead.topic,
                    "partition": dead.kafka_partition,
                    "offset": dead.kafka_offset,
                    "error": dead.error,
                }),
            )
            .await?;
        }
    }
    Ok(purged)
}

/// A record to publish again (what [`republish`] appends to the outbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayable {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// `ce_id`.
    pub event_id: uuid::Uuid,
    pub event_type: String,
    /// `ce_source`.
    pub source: String,
    /// The headers other than the CloudEvents ones (trace context, the replay headers).
    pub headers: Vec<(String, String)>,
}

/// What [`prepare_replay`] decided about one dead letter.
#[derive(Clone, Debug)]
pub struct ReplayDecision {
    pub consumer: String,
    pub event_id: String,
    /// Which replay it is (`replays` + 1).
    pub replay: i32,
    /// The record to republish, or why it is held back.
    pub outcome: Result<Replayable, String>,
}

/// The default of [`prepare_replay`]'s `max_replays`.
pub const MAX_REPLAYS: i32 = 3;

/// Prepares the selected dead letters for a replay: each goes (with the replay headers set) or
/// is held back (its record was not kept, its ce_id is not a UUID, or it was replayed
/// `max_replays` times already and dead-lettered again each time, unless `force`). Unless
/// `dry_run`, every decision is recorded as `dlq.replay`. Changes no dead letter (see the
/// module's documentation).
///
/// # Errors
/// Database errors.
pub async fn prepare_replay(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
    max_replays: i32,
    force: bool,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<ReplayDecision>, sqlx::Error> {
    let sql = format!(
        "SELECT {WHOLE} FROM eventing_dead_letter WHERE {MATCHING} ORDER BY failed_at, event_id"
    );
    let rows: Vec<DeadLetter> = bind_filter(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter)
        .fetch_all(&mut *conn)
        .await?;
    let mut decisions = Vec::with_capacity(rows.len());
    for row in rows {
        let replay = row.replays.saturating_add(1);
        let outcome = replayable(&row, replay, max_replays, force);
        if !dry_run {
            audit(
                conn,
                actor,
                "dlq.replay",
                Some(&row.consumer),
                Some(&row.event_id),
                json!({
                    "replay": replay,
                    "force": force,
                    "topic": row.topic,
                    "partition": row.kafka_partition,
                    "offset": row.kafka_offset,
                    "held_back": outcome.as_ref().err(),
                }),
            )
            .await?;
        }
        decisions.push(ReplayDecision {
            consumer: row.consumer,
            event_id: row.event_id,
            replay,
            outcome,
        });
    }
    Ok(decisions)
}

/// The record of `row` as replay number `replay`, or why it is held back.
fn replayable(
    row: &DeadLetter,
    replay: i32,
    max_replays: i32,
    force: bool,
) -> Result<Replayable, String> {
    if row.replays >= max_replays && !force {
        return Err(format!(
            "replayed {} times and dead-lettered again each time (the limit is {max_replays}): fix the cause, then replay it with --force",
            row.replays
        ));
    }
    let (Some(payload), true) = (&row.payload, row.record_kept) else {
        return Err("the record was not kept with its dead letter (dead-lettered by an older version): re-drive it from the dead-letter topic".into());
    };
    let event_id = uuid::Uuid::parse_str(&row.event_id).map_err(|_| {
        "its ce_id is not a UUID (not an event of this suite's outboxes): re-drive it by hand"
            .to_owned()
    })?;
    let key = match &row.record_key {
        Some(key) => String::from_utf8(key.clone())
            .map_err(|_| "its key is not UTF-8 text: re-drive it by hand".to_owned())?,
        None => return Err("it has no key: re-drive it by hand".into()),
    };
    let event_type = row
        .header(headers::CE_TYPE)
        .map(str::to_owned)
        .or_else(|| row.event_type.clone())
        .ok_or_else(|| "it has no ce_type".to_owned())?;
    let source = row
        .header(headers::CE_SOURCE)
        .unwrap_or("/shop/replay")
        .to_owned();
    let mut kept = Vec::new();
    for (name, value) in row.headers() {
        let cloudevents = name.starts_with("ce_") || name == headers::CONTENT_TYPE;
        let ours = name == headers::REPLAY_CONSUMER || name == headers::REPLAY_COUNT;
        if cloudevents || ours {
            continue;
        }
        let value = std::str::from_utf8(value)
            .map_err(|_| format!("its header {name} is not UTF-8 text: re-drive it by hand"))?;
        kept.push((name.to_owned(), value.to_owned()));
    }
    kept.push((headers::REPLAY_CONSUMER.to_owned(), row.consumer.clone()));
    kept.push((headers::REPLAY_COUNT.to_owned(), replay.to_string()));
    Ok(Replayable {
        topic: row.topic.clone(),
        key,
        payload: payload.clone(),
        event_id,
        event_type,
        source,
        headers: kept,
    })
}

/// How [`republish`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Republished {
    pub appended: u32,
    /// The outbox already had a row with the ce_id (not yet published): not appended twice.
    pub already_queued: u32,
}

/// Appends `records` to this database's outbox (unless `dry_run`), each recorded as
/// `outbox.republish`. The relay publishes them with their own ce_id, type, source and headers;
/// their ce_time is the time of the append. The caller checks the topics are this service's.
///
/// # Errors
/// Database errors.
pub async fn republish(
    conn: &mut PgConnection,
    records: &[Replayable],
    actor: &str,
    dry_run: bool,
) -> Result<Republished, sqlx::Error> {
    let mut done = Republished::default();
    for record in records {
        let headers: serde_json::Map<String, serde_json::Value> = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let appended = if dry_run {
            let queued: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM eventing_outbox WHERE event_id = $1)",
            )
            .bind(record.event_id)
            .fetch_one(&mut *conn)
            .await?;
            !queued
        } else {
            sqlx::query(
                "INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(record.event_id)
            .bind(&record.topic)
            .bind(&record.key)
            .bind(&record.event_type)
            .bind(&record.source)
            .bind(&record.payload)
            .bind(serde_json::Value::Object(headers.clone()))
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1
        };
        if appended {
            done.appended += 1;
        } else {
            done.already_queued += 1;
        }
        if !dry_run {
            let event_id = record.event_id.to_string();
            audit(
                conn,
                actor,
                "outbox.republish",
                None,
                Some(&event_id),
                json!({
                    "topic": record.topic,
                    "key": record.key,
                    "event_type": record.event_type,
                    "headers": headers,
                    "appended": appended,
                }),
            )
            .await?;
        }
    }
    Ok(done)
}

/// The outbox at a glance.
#[derive(Clone, Debug)]
pub struct OutboxStatus {
    /// Rows not yet published, parked ones included.
    pub backlog: i64,
    /// Age of the oldest row that can be published (parked rows and those behind them left
    /// out, as `shop_outbox_oldest_event_age_seconds`), in seconds.
    pub oldest_age_seconds: f64,
    /// Rows in backoff after a failed attempt, not parked yet.
    pub retrying: i64,
    pub parked: Vec<ParkedEvent>,
}

/// The outbox's backlog, oldest row and parked rows.
///
/// # Errors
/// Database errors.
pub async fn outbox_status(conn: &mut PgConnection) -> Result<OutboxStatus, sqlx::Error> {
    let (backlog, retrying, oldest_age_seconds): (i64, i64, f64) = sqlx::query_as(
        "SELECT count(*), \
                count(*) FILTER (WHERE o.attempts > 0 AND o.parked_at IS NULL), \
                coalesce(extract(epoch FROM clock_timestamp() - min(o.created_at) FILTER (WHERE p.topic IS NULL))::float8, 0) \
         FROM eventing_outbox AS o \
         LEFT JOIN (SELECT DISTINCT topic, partition_key FROM eventing_outbox \
                    WHERE attempts > 0 AND parked_at IS NOT NULL) AS p \
           ON p.topic = o.topic AND p.partition_key = o.partition_key",
    )
    .fetch_one(&mut *conn)
    .await?;
    let parked = parked_events(&mut *conn).await?;
    Ok(OutboxStatus {
        backlog,
        oldest_age_seconds: oldest_age_seconds.max(0.0),
        retrying,
        parked,
    })
}

/// What to do with parked rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkedAction {
    Retry,
    Drop,
}

/// Retries or drops the selected parked rows (see [`retry_parked`], [`drop_parked`]), recorded
/// as `outbox.retry` / `outbox.drop`; with `dry_run`, only counts them.
///
/// # Errors
/// Database errors.
pub async fn settle_parked(
    conn: &mut PgConnection,
    which: ParkedEvents<'_>,
    action: ParkedAction,
    actor: &str,
    dry_run: bool,
) -> Result<u64, sqlx::Error> {
    let selected: Vec<ParkedEvent> = parked_events(&mut *conn)
        .await?
        .into_iter()
        .filter(|p| match which {
            ParkedEvents::All => true,
            ParkedEvents::Topic(topic) => p.topic == topic,
            ParkedEvents::Ids(ids) => ids.contains(&p.id),
        })
        .collect();
    if dry_run {
        return Ok(selected.len() as u64);
    }
    let count = match action {
        ParkedAction::Retry => retry_parked(&mut *conn, which).await?,
        ParkedAction::Drop => drop_parked(&mut *conn, which).await?,
    };
    let name = match action {
        ParkedAction::Retry => "outbox.retry",
        ParkedAction::Drop => "outbox.drop",
    };
    for row in &selected {
        let event_id = row.event_id.to_string();
        audit(
            conn,
            actor,
            name,
            None,
            Some(&event_id),
            json!({
                "outbox_id": row.id,
                "topic": row.topic,
                "key": row.partition_key,
                "event_type": row.event_type,
                "attempts": row.attempts,
                "last_error": row.last_error,
            }),
        )
        .await?;
    }
    Ok(count)
}
