//! The notification service's SQL. Functions take a connection so callers decide the
//! transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    Cursor, CustomerId, DeliveryStatus, Filter, Kind, NewNotification, Notification,
};

/// `SELECT`s every column of a notification, followed by the rest of the query.
macro_rules! select_notifications {
    ($rest:literal) => {
        concat!(
            "SELECT notification_id, order_id, customer_id, kind, message, channel, status, \
             attempts, created_at, delivered_at, traceparent FROM notifications ",
            $rest
        )
    };
}

/// A notification row as stored; kind, status and customer id are parsed when it becomes a
/// [`Notification`].
#[derive(Clone, Debug, sqlx::FromRow)]
struct NotificationRow {
    notification_id: Uuid,
    order_id: String,
    customer_id: String,
    kind: String,
    message: String,
    channel: String,
    status: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    traceparent: Option<String>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = sqlx::Error;

    fn try_from(row: NotificationRow) -> sqlx::Result<Self> {
        Ok(Self {
            kind: Kind::parse(&row.kind).map_err(|e| sqlx::Error::Decode(e.into()))?,
            status: DeliveryStatus::parse(&row.status)
                .map_err(|e| sqlx::Error::Decode(e.into()))?,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            notification_id: row.notification_id,
            order_id: row.order_id,
            // Only parsed customer ids are stored (the consumer parses the events' ones).
            customer_id: CustomerId::parse(&row.customer_id).map_err(|e| {
                sqlx::Error::ColumnDecode {
                    index: "customer_id".to_owned(),
                    source: e.into(),
                }
            })?,
            message: row.message,
            channel: row.channel,
            created_at: row.created_at,
            delivered_at: row.delivered_at,
            traceparent: row.traceparent,
        })
    }
}

fn into_notifications(rows: Vec<NotificationRow>) -> sqlx::Result<Vec<Notification>> {
    rows.into_iter().map(Notification::try_from).collect()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Records a PENDING notification, due now, to go through `channel`, with the trace context its
/// deliveries continue; `false` if the order already has a notification of this kind.
#[shop_telemetry::db_span("INSERT", "notifications")]
pub async fn insert_notification(
    conn: &mut PgConnection,
    notification: &NewNotification,
    channel: &str,
    traceparent: Option<&str>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO notifications (notification_id, order_id, customer_id, kind, message, channel, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(notification.notification_id)
    .bind(&notification.order_id)
    .bind(notification.customer_id.as_str())
    .bind(notification.kind.as_str())
    .bind(&notification.message)
    .bind(channel)
    .bind(traceparent)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// One page of notifications of a customer or an order, newest first, strictly after `after`.
#[shop_telemetry::db_span("SELECT", "notifications")]
pub async fn notifications(
    conn: &mut PgConnection,
    filter: &Filter,
    after: Option<Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<Notification>> {
    // One statement per filter, so each uses its own index.
    let (sql, subject) = match filter {
        Filter::Customer(customer_id) => (
            select_notifications!(
                "WHERE customer_id = $1 \
                 AND ($2::timestamptz IS NULL OR (created_at, notification_id) < ($2, $3)) \
                 ORDER BY created_at DESC, notification_id DESC LIMIT $4"
            ),
            customer_id.as_str(),
        ),
        Filter::Order(order_id) => (
            select_notifications!(
                "WHERE order_id = $1 \
                 AND ($2::timestamptz IS NULL OR (created_at, notification_id) < ($2, $3)) \
                 ORDER BY created_at DESC, notification_id DESC LIMIT $4"
            ),
            order_id.as_str(),
        ),
    };
    let rows: Vec<NotificationRow> = sqlx::query_as(sql)
        .bind(subject)
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.notification_id))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    into_notifications(rows)
}

/// Claims up to `limit` due PENDING notifications, oldest due first, skipping those another
/// worker holds, and leases them: they are not due again before `lease` has passed, so the
/// delivery runs outside any transaction and a worker that dies mid-delivery only delays them.
///
/// An order's notifications go out in the order they were recorded (its outcomes' order): one
/// is not claimed while an earlier one of its order is still PENDING, whether that one is being
/// delivered (leased) or waiting for its retry. Otherwise a cancellation could reach the
/// customer before the confirmation whose first delivery failed. An earlier one that FAILED for
/// good no longer holds the later ones back.
#[shop_telemetry::db_span("UPDATE", "notifications")]
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<Notification>> {
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "WITH due AS ( \
             SELECT n.notification_id FROM notifications n \
             WHERE n.status = 'PENDING' AND n.next_attempt_at <= now() \
             AND NOT EXISTS ( \
                 SELECT 1 FROM notifications e \
                 WHERE e.order_id = n.order_id AND e.status = 'PENDING' \
                 AND (e.created_at, e.notification_id) < (n.created_at, n.notification_id) \
             ) \
             ORDER BY n.next_attempt_at LIMIT $1 FOR UPDATE OF n SKIP LOCKED \
         ) \
         UPDATE notifications n SET next_attempt_at = now() + $2 * interval '1 millisecond' \
         FROM due WHERE n.notification_id = due.notification_id \
         RETURNING n.notification_id, n.order_id, n.customer_id, n.kind, n.message, n.channel, \
         n.status, n.attempts, n.created_at, n.delivered_at, n.traceparent",
    )
    .bind(limit)
    .bind(millis(lease))
    .fetch_all(conn)
    .await?;
    into_notifications(rows)
}

/// How one delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; another attempt is due after the delay.
    Retry(Duration),
    /// Failed, and it was the last attempt.
    GaveUp,
}

/// One delivery attempt to record.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    pub notification_id: Uuid,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The channel that made it.
    pub channel: &'a str,
    pub outcome: AttemptOutcome,
    /// Why it failed (`None` when delivered).
    pub error: Option<&'a str>,
    pub http_status: Option<u16>,
}

/// Records attempt `attempt.attempt` and moves the notification on (DELIVERED, due again later,
/// or FAILED). `false`, recording nothing, when the notification is no longer PENDING after
/// `attempt.attempt - 1` attempts: another worker recorded this attempt first (this worker's
/// lease had expired).
#[shop_telemetry::db_span("INSERT", "delivery_attempts")]
pub async fn record_attempt(conn: &mut PgConnection, attempt: &Attempt<'_>) -> sqlx::Result<bool> {
    let number = i32::try_from(attempt.attempt).unwrap_or(i32::MAX);
    let (status, next_in) = match attempt.outcome {
        AttemptOutcome::Delivered => (DeliveryStatus::Delivered, Duration::ZERO),
        AttemptOutcome::Retry(delay) => (DeliveryStatus::Pending, delay),
        AttemptOutcome::GaveUp => (DeliveryStatus::Failed, Duration::ZERO),
    };
    let moved = sqlx::query(
        "UPDATE notifications SET status = $3, attempts = $2, channel = $4, \
         next_attempt_at = now() + $5 * interval '1 millisecond', \
         delivered_at = CASE WHEN $3::text = 'DELIVERED' THEN now() END \
         WHERE notification_id = $1 AND status = 'PENDING' AND attempts = $2 - 1",
    )
    .bind(attempt.notification_id)
    .bind(number)
    .bind(status.as_str())
    .bind(attempt.channel)
    .bind(millis(next_in))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !moved {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO delivery_attempts (notification_id, attempt, outcome, error, http_status) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(attempt.notification_id)
    .bind(number)
    .bind(if attempt.outcome == AttemptOutcome::Delivered {
        "delivered"
    } else {
        "failed"
    })
    .bind(attempt.error)
    .bind(attempt.http_status.map(i32::from))
    .execute(conn)
    .await?;
    Ok(true)
}
