//! The notification service's use cases and its delivery worker.
//!
//! Recording and delivering are apart: the order events consumer only records a PENDING
//! notification (in its own transaction, once per order and kind); the [`DeliveryWorker`] claims
//! due notifications and hands them to a [`Channel`], outside any transaction, so a slow or
//! failing channel never holds up consumption.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shop_eventing::RetryPolicy;
use shop_runtime::auth::Caller;
use shop_runtime::status::ServiceError;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{
    AfterFailure, Cursor, ListQuery, NewNotification, Notification, after_failure,
};
use crate::metrics::NotificationMetrics;
use crate::outbound::postgres::{self as db, Attempt, AttemptOutcome};

/// Consumer step for an order outcome: records its notification, PENDING and due now, to go
/// through `channel`. An order outcome already notified (the same event re-published under a new
/// id, or a replay) records nothing.
///
/// # Errors
/// Database errors (the consumer retries them).
pub async fn record(
    tx: &mut PgConnection,
    channel: &str,
    metrics: &NotificationMetrics,
    notification: &NewNotification,
) -> sqlx::Result<()> {
    // The consumer's span: deliveries become its children, in the order's trace.
    let traceparent = shop_telemetry::current_trace_headers()
        .into_iter()
        .find(|(k, _)| k == shop_telemetry::TRACEPARENT)
        .map(|(_, v)| v);
    if db::insert_notification(tx, notification, channel, traceparent.as_deref()).await? {
        metrics.recorded(notification.kind.as_str());
        tracing::info!(
            notification.id = %notification.notification_id,
            order.id = %notification.order_id,
            kind = notification.kind.as_str(),
            "Notification recorded."
        );
    } else {
        tracing::debug!(
            order.id = %notification.order_id,
            kind = notification.kind.as_str(),
            "Order outcome already notified; skipping."
        );
    }
    Ok(())
}

/// A page of a customer's or an order's notifications, newest first, and the next page's token
/// (empty at the end). Only what `caller` may see is listed: the notifications of an order that
/// is another customer's are an empty page, as for an order without any (every notification of
/// an order is its customer's, so a page is all theirs or none of it).
///
/// # Errors
/// `Invalid` unless exactly one of `customer_id` and `order_id` is set, for a page size above
/// 100 or a token that no page returned.
pub async fn list_notifications(
    pool: &PgPool,
    customer_id: &str,
    order_id: &str,
    page_size: u32,
    page_token: &str,
    caller: &Caller,
) -> Result<(Vec<Notification>, String), ServiceError> {
    let query = ListQuery::parse(customer_id, order_id, page_size, page_token)
        .map_err(|v| ServiceError::Invalid(v.into()))?;
    let mut conn = pool.acquire().await?;
    let mut page = db::notifications(&mut conn, &query.filter, query.after, query.limit).await?;
    let listed = page.len();
    page.retain(|n| caller.sees_customer(n.customer_id.as_str()));
    if page.len() < listed {
        return Ok((Vec::new(), String::new()));
    }
    let next = match page.last() {
        Some(last) if i64::try_from(page.len()).unwrap_or(0) == query.limit => Cursor {
            created_at: last.created_at,
            notification_id: last.notification_id,
        }
        .encode(),
        _ => String::new(),
    };
    Ok((page, next))
}

/// Proof of a delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The HTTP status the channel answered with, when it is HTTP.
    pub http_status: Option<u16>,
}

/// A failed delivery attempt. Every failure is worth another attempt: the worker retries until
/// the attempts are exhausted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DeliveryError {
    /// What went wrong, for the attempt's record and the logs.
    pub reason: String,
    /// The HTTP status the channel answered with, when it is HTTP and answered.
    pub http_status: Option<u16>,
}

/// A way of telling a customer: the port the delivery worker delivers through.
pub trait Channel: Send + Sync + 'static {
    /// The name stored on the notifications it delivers (`log`, `webhook`).
    fn name(&self) -> &'static str;

    /// Delivers `notification` once. Must finish in bounded time (a channel enforces its own
    /// timeout): the worker's claim on the notification is a lease.
    fn deliver(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<DeliveryReceipt, DeliveryError>> + Send;
}

/// Settings of a [`DeliveryWorker`].
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Attempts per notification (the first one included) and the backoff between them.
    pub retry: RetryPolicy,
    /// How often an idle worker looks for due notifications.
    pub poll_interval: Duration,
    /// Most deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claimed notification stays out of other workers' reach: longer than any
    /// delivery may take. A worker that dies mid-delivery delays it by at most this.
    pub lease: Duration,
    /// Where delivered and failed notifications are counted.
    pub metrics: NotificationMetrics,
}

/// Claims due notifications and delivers them through a [`Channel`], recording every attempt:
/// DELIVERED on success; otherwise due again after a jittered exponential backoff, and FAILED
/// once the attempts are exhausted.
///
/// Claims are leases (`FOR UPDATE SKIP LOCKED`, then the notification is not due again until the
/// lease expires), so deliveries run outside any transaction, hold no connection, and several
/// replicas share the work. Delivery is at least once: a delivery whose outcome could not be
/// recorded is made again, with the same `notification_id` for receivers to deduplicate on.
pub struct DeliveryWorker<C> {
    pool: PgPool,
    channel: Arc<C>,
    config: DeliveryConfig,
}

impl<C> std::fmt::Debug for DeliveryWorker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C: Channel> DeliveryWorker<C> {
    pub fn new(pool: PgPool, channel: C, config: DeliveryConfig) -> Self {
        Self {
            pool,
            channel: Arc::new(channel),
            config,
        }
    }

    /// Delivers until `shutdown` is cancelled, then lets the deliveries in flight finish (each is
    /// bounded by its channel's timeout) so that their outcomes are recorded. Database failures
    /// are logged and retried at the next poll.
    ///
    /// # Errors
    /// Never: failures are retried. The `Result` lets it run as a service task.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut in_flight = JoinSet::new();
        loop {
            let free = self.config.concurrency.saturating_sub(in_flight.len());
            let mut saturated = false;
            if free > 0 && !shutdown.is_cancelled() {
                match self.claim(free).await {
                    Ok(claimed) => {
                        // A full claim means more may be due: claim again at once.
                        saturated = claimed.len() == free;
                        for notification in claimed {
                            in_flight.spawn(self.deliver(notification));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Claiming due notifications failed; retrying.");
                    }
                }
            }
            if saturated {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        while let Some(joined) = in_flight.join_next().await {
            log_panic(joined);
        }
        Ok(())
    }

    async fn claim(&self, limit: usize) -> sqlx::Result<Vec<Notification>> {
        let mut conn = self.pool.acquire().await?;
        db::claim_due(
            &mut conn,
            i64::try_from(limit).unwrap_or(i64::MAX),
            self.config.lease,
        )
        .await
    }

    /// One attempt at `notification` and its record.
    fn deliver(&self, notification: Notification) -> impl Future<Output = ()> + Send + 'static {
        let (pool, channel, retry) = (
            self.pool.clone(),
            Arc::clone(&self.channel),
            self.config.retry.clone(),
        );
        let metrics = self.config.metrics.clone();
        let attempt = notification.attempts + 1;
        let span = tracing::info_span!(
            "deliver notification",
            notification.id = %notification.notification_id,
            order.id = %notification.order_id,
            kind = notification.kind.as_str(),
            channel = channel.name(),
            attempt,
        );
        if let Some(traceparent) = &notification.traceparent {
            shop_telemetry::set_parent_from_headers(
                &span,
                [(shop_telemetry::TRACEPARENT, traceparent.as_str())],
            );
        }
        async move {
            let result = channel.deliver(&notification).await;
            let (outcome, error, http_status) = match result {
                Ok(receipt) => (AttemptOutcome::Delivered, None, receipt.http_status),
                Err(failure) => {
                    let outcome = match after_failure(attempt, &retry) {
                        AfterFailure::RetryIn(delay) => AttemptOutcome::Retry(delay),
                        AfterFailure::GiveUp => AttemptOutcome::GaveUp,
                    };
                    (outcome, Some(failure.reason), failure.http_status)
                }
            };
            let record = Attempt {
                notification_id: notification.notification_id,
                attempt,
                channel: channel.name(),
                outcome: outcome.clone(),
                error: error.as_deref(),
                http_status,
            };
            match record_attempt(&pool, &record).await {
                Ok(true) => {
                    metrics.attempt(
                        channel.name(),
                        matches!(outcome, AttemptOutcome::Delivered),
                        matches!(outcome, AttemptOutcome::GaveUp),
                    );
                    match outcome {
                    AttemptOutcome::Delivered => tracing::info!("Notification delivered."),
                    AttemptOutcome::Retry(delay) => tracing::warn!(
                        error = error.as_deref().unwrap_or(""),
                        http_status,
                        ?delay,
                        "Delivery failed; retrying."
                    ),
                    AttemptOutcome::GaveUp => tracing::error!(
                        error = error.as_deref().unwrap_or(""),
                        http_status,
                        "Delivery failed and no attempt is left; the notification is FAILED."
                    ),
                    }
                }
                Ok(false) => tracing::warn!(
                    "Another worker recorded this attempt first (the lease expired); not recorded."
                ),
                Err(error) => tracing::warn!(
                    %error,
                    "Recording the attempt failed; the notification is due again once its lease expires."
                ),
            }
        }
        .instrument(span)
    }
}

async fn record_attempt(pool: &PgPool, attempt: &Attempt<'_>) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let recorded = db::record_attempt(&mut tx, attempt).await?;
    tx.commit().await?;
    Ok(recorded)
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "A delivery panicked; the notification is due again once its lease expires.");
    }
}
