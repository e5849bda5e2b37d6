//! The order service's use cases and the saga's orchestration. Every state change and the event
//! it causes are written in one transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use shop_eventing::Publisher;
use shop_proto::common::v1::Money;
use shop_proto::order::v1 as pb;
use shop_runtime::auth::Caller;
use shop_runtime::page_token;
use shop_runtime::status::{FieldViolations, ServiceError};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{CancellationReason, CustomerId, Order, OrderRequest, OrderStatus, price};
use crate::metrics::{LateCompensation, OrderMetrics};
use crate::outbound::inventory::InventoryCatalog;
use crate::outbound::postgres::{self as db, FullOrder, OrderRow};

/// Where the order's events go, and its outcomes are counted.
#[derive(Clone, Debug)]
pub struct Events {
    pub publisher: Publisher,
    pub metrics: OrderMetrics,
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn event_lines(lines: &[db::LineRow], currency: &str) -> Vec<pb::OrderLine> {
    lines
        .iter()
        .map(|l| pb::OrderLine {
            sku: l.sku.clone(),
            quantity: u32::try_from(l.quantity).unwrap_or(0),
            unit_price: money(l.unit_price_minor, currency),
        })
        .collect()
}

/// Places an order: validates it, prices it from inventory's catalog and records it PENDING with
/// an `OrderPlaced` event. A retry with the same idempotency key returns the same order.
///
/// # Errors
/// `Invalid` (field violations, unknown skus), `Precondition` (key reused with another
/// payload), `Unavailable` (inventory down, slow or its breaker open).
pub async fn place_order(
    pool: &PgPool,
    catalog: &InventoryCatalog,
    events: &Events,
    backlog: &Backlog,
    request: OrderRequest,
) -> Result<Order, ServiceError> {
    // Refused before any other work: a refusal must stay cheap (no connection, no query) when
    // refusals are most of the traffic. A retry of an order already accepted is refused too
    // while the saga is behind: RESOURCE_EXHAUSTED promises nothing about the order, and the
    // retry the RetryInfo asks for gets it (the key is never lost).
    backlog.admit()?;
    if let Some(existing) = existing_for_key(pool, &request).await? {
        return Ok(existing.try_into()?);
    }
    let prices = catalog
        .prices(&request.skus())
        .await
        .map_err(|e| ServiceError::Unavailable {
            reason: e.to_string(),
            retry_after: e.retry_after,
        })?;
    let priced = price(&request, &prices).map_err(|v| ServiceError::Invalid(v.into()))?;

    let order = shop_eventing::committing(record_order(pool, events, &request, &priced)).await?;
    Ok(order.try_into()?)
}

/// When the saga is behind, and PlaceOrder refuses new orders.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    /// An order pending longer than this is late: past the wait a placed order is meant to see.
    pub max_wait: Duration,
    /// New orders are refused while this many recent orders are late.
    pub max_late: u32,
    /// The most orders pending at once, whatever the saga's pace (a backstop: memory and the
    /// cost of the count stay bounded whatever happens).
    pub max_pending: u32,
}

impl AdmissionLimits {
    /// Orders placed longer ago than this are not counted late: an order parked for an
    /// operator (its payment dead-lettered) or waiting out a long outage is no sign of how fast
    /// the saga goes now, and must not close the shop until its saga deadline.
    pub const RECENT: Duration = Duration::from_secs(30);
}

/// The saga's backlog, and the admission of new orders by it: PlaceOrder admits a new order
/// only while the saga keeps up.
///
/// Why this signal: an order accepted is a promise to finish its saga, and every part of the
/// saga that falls behind (a consumer's lag, an outbox not drained, a service down, a database
/// slowed) shows up as orders left pending; consumer lag or outbox age alone would each miss the
/// others. What customers see is the wait, so the target is the wait: an order pending longer
/// than [`AdmissionLimits::max_wait`] is late, and while [`AdmissionLimits::max_late`] recent
/// orders are late, new ones are refused (a few stragglers, one slow payment, do not close the
/// shop).
///
/// The wait alone would come too late: an order is late only `max_wait` after it was
/// accepted, so a gate driven by it alone stays open that long after every reopening and lets
/// in a burst the saga takes seconds to finish (measured: p50 0.77 s with a 300 ms target). So
/// the number pending is bounded too, by a limit that adapts to the saga's pace as TCP's window
/// does (additive increase, multiplicative decrease; Netflix's concurrency-limits for
/// services): it grows while it is what holds orders back and none is late, and shrinks by a
/// fifth when orders are late, at most once per `max_wait` (the time the wait takes to show a
/// change). It settles near what the saga finishes within the wait (Little's law: its pace
/// times the wait), on any machine, without a figure to tune. Orders admitted between two
/// counts are added to the pending count as they are, so no burst slips in between.
///
/// Past either, PlaceOrder answers RESOURCE_EXHAUSTED with a RetryInfo, at once, instead of
/// accepting work it would finish late — or at the saga deadline, cancelled. The figures are
/// refreshed by [`Backlog::watch`] every few tens of milliseconds (one index scan of the
/// pending orders), never per call: a refusal costs no query.
#[derive(Clone, Debug)]
pub struct Backlog {
    state: Arc<BacklogState>,
    limits: AdmissionLimits,
}

#[derive(Debug, Default)]
struct BacklogState {
    /// Pending as last counted, plus the orders admitted since.
    pending: AtomicI64,
    /// Recent orders late, as last counted.
    late: AtomicI64,
    /// The adaptive limit on `pending`.
    limit: AtomicI64,
}

impl Backlog {
    /// How long a refused client is asked to wait, on average: about the time the saga takes
    /// to finish a share of its backlog. Each refusal asks for a delay drawn from half to one
    /// and a half times this: refusals come in bursts, and retries all asked to come back at
    /// once would arrive as one burst again.
    pub const RETRY_AFTER: Duration = Duration::from_millis(250);

    /// The limit at the start, before the saga's pace is known: what a small machine finishes
    /// in a fraction of a second.
    const INITIAL_LIMIT: i64 = 64;

    fn retry_delay() -> Duration {
        use rand::Rng as _;
        let base = u64::try_from(Self::RETRY_AFTER.as_millis()).unwrap_or(250);
        Duration::from_millis(rand::rng().random_range(base / 2..=base * 3 / 2))
    }

    /// With these limits; nothing counted yet.
    pub fn new(limits: AdmissionLimits) -> Self {
        let state = BacklogState::default();
        let start = Self::INITIAL_LIMIT.clamp(Self::floor(&limits), i64::from(limits.max_pending));
        state.limit.store(start, Ordering::Relaxed);
        Self {
            state: Arc::new(state),
            limits,
        }
    }

    /// The adaptive limit never goes below this: as many orders as may be late.
    fn floor(limits: &AdmissionLimits) -> i64 {
        i64::from(limits.max_late.max(1)).min(i64::from(limits.max_pending))
    }

    /// Orders pending (as counted, plus those admitted since), recent ones late, and the
    /// current limit on the pending.
    pub fn counted(&self) -> (i64, i64, i64) {
        (
            self.state.pending.load(Ordering::Relaxed),
            self.state.late.load(Ordering::Relaxed),
            self.state.limit.load(Ordering::Relaxed),
        )
    }

    /// Admits a new order, counted as pending from now on.
    ///
    /// # Errors
    /// [`ServiceError::Overloaded`] when the saga is behind.
    pub fn admit(&self) -> Result<(), ServiceError> {
        let state = &self.state;
        let late = state.late.load(Ordering::Relaxed);
        let reason = if late >= i64::from(self.limits.max_late) {
            format!(
                "{late} orders have waited over {} ms for their saga; retry after the delay in RetryInfo",
                self.limits.max_wait.as_millis()
            )
        } else {
            let limit = state.limit.load(Ordering::Relaxed);
            let pending = state.pending.fetch_add(1, Ordering::Relaxed);
            if pending < limit {
                return Ok(());
            }
            state.pending.fetch_sub(1, Ordering::Relaxed);
            format!(
                "{pending} orders are still being processed (at most {limit} are accepted at once now); retry after the delay in RetryInfo"
            )
        };
        Err(ServiceError::Overloaded {
            reason,
            retry_after: Self::retry_delay(),
        })
    }

    /// Takes a count: the new figures, and the limit adapted to them. `since_decrease` is how
    /// long ago the limit last shrank; returns whether it shrank now.
    fn update(&self, pending: i64, late: i64, since_decrease: Duration) -> bool {
        let state = &self.state;
        let limit = state.limit.load(Ordering::Relaxed);
        // Whether the limit is what holds orders back: pending near it (the figure admissions
        // raised since the last count, or the new count).
        let binding = state.pending.load(Ordering::Relaxed).max(pending) * 4 >= limit * 3;
        state.pending.store(pending, Ordering::Relaxed);
        state.late.store(late, Ordering::Relaxed);
        let (floor, ceiling) = (
            Self::floor(&self.limits),
            i64::from(self.limits.max_pending),
        );
        let (next, decreased) = if late >= i64::from(self.limits.max_late) {
            if since_decrease < self.limits.max_wait {
                (limit, false)
            } else {
                (limit * 4 / 5, true)
            }
        } else if late == 0 && binding {
            (limit + (limit / 20).max(1), false)
        } else {
            (limit, false)
        };
        state
            .limit
            .store(next.clamp(floor, ceiling), Ordering::Relaxed);
        decreased
    }

    /// Counts the pending orders every `interval` until `shutdown`, adapting the limit; a
    /// failed count keeps the last one (and is logged).
    ///
    /// # Errors
    /// Never: failures are retried. The `Result` lets it run as a service task.
    pub async fn watch(
        self,
        pool: PgPool,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut decreased = std::time::Instant::now();
        loop {
            let counted = async {
                let conn = &mut *pool.acquire().await?;
                db::count_pending(conn, self.limits.max_wait, AdmissionLimits::RECENT).await
            };
            match counted.await {
                Ok((pending, late)) => {
                    if self.update(pending, late, decreased.elapsed()) {
                        decreased = std::time::Instant::now();
                    }
                }
                Err(error) => tracing::warn!(%error, "Could not count the pending orders."),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod backlog_tests {
    use super::*;

    fn backlog() -> Backlog {
        Backlog::new(AdmissionLimits {
            max_wait: Duration::from_millis(300),
            max_late: 16,
            max_pending: 1000,
        })
    }

    const LONG_AGO: Duration = Duration::from_secs(10);

    #[test]
    fn a_burst_between_two_counts_is_bounded_by_the_limit() {
        let b = backlog();
        let admitted = (0..200).filter(|_| b.admit().is_ok()).count();
        assert_eq!(admitted, 64, "the initial limit, whatever the burst");
        b.update(0, 0, LONG_AGO);
        assert!(b.admit().is_ok(), "the saga finished them: open again");
    }

    #[test]
    fn the_limit_grows_while_it_binds_and_nothing_is_late() {
        let b = backlog();
        b.update(60, 0, LONG_AGO);
        assert_eq!(b.counted().2, 67);
        b.update(10, 0, LONG_AGO);
        assert_eq!(b.counted().2, 70, "it bound until this count");
        b.update(10, 0, LONG_AGO);
        assert_eq!(b.counted().2, 70, "not binding: unchanged");
        b.update(60, 3, LONG_AGO);
        assert_eq!(b.counted().2, 70, "a few late: no growth");
    }

    #[test]
    fn the_limit_shrinks_when_orders_are_late_once_per_wait_and_never_below_the_floor() {
        let b = backlog();
        assert!(b.update(64, 20, LONG_AGO));
        assert_eq!(b.counted().2, 51);
        assert!(b.admit().is_err(), "late orders: refused");
        assert!(
            !b.update(64, 20, Duration::from_millis(100)),
            "too soon after the last"
        );
        assert_eq!(b.counted().2, 51);
        for _ in 0..20 {
            b.update(64, 20, LONG_AGO);
        }
        assert_eq!(b.counted().2, 16, "the floor: as many as may be late");
    }

    #[test]
    fn the_backstop_caps_the_limit() {
        let b = Backlog::new(AdmissionLimits {
            max_wait: Duration::from_millis(300),
            max_late: 16,
            max_pending: 2,
        });
        assert_eq!(b.counted().2, 2);
        for _ in 0..50 {
            b.update(2, 0, LONG_AGO);
        }
        assert_eq!(b.counted().2, 2);
        assert!(b.admit().is_err());
    }
}

async fn record_order(
    pool: &PgPool,
    events: &Events,
    request: &OrderRequest,
    priced: &crate::domain::Priced,
) -> Result<FullOrder, ServiceError> {
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let Some(order) = db::insert_order(&mut tx, order_id, request, priced).await? else {
        // A concurrent retry under the same key committed first.
        drop(tx);
        return existing_for_key(pool, request)
            .await?
            .ok_or_else(|| anyhow::anyhow!("idempotency key vanished").into());
    };
    let placed = pb::OrderPlaced {
        order_id: order_id.to_string(),
        customer_id: request.customer_id.to_string(),
        lines: event_lines(&order.lines, &order.order.currency),
        total: money(priced.total_minor, &priced.currency),
    };
    events.publisher.append(&mut tx, order_id, &placed).await?;
    events.metrics.placed();
    tx.commit().await?;
    tracing::info!(%order_id, customer_id = %request.customer_id, total_minor = priced.total_minor, "Order placed.");
    Ok(order)
}

async fn existing_for_key(
    pool: &PgPool,
    request: &OrderRequest,
) -> Result<Option<FullOrder>, ServiceError> {
    let mut conn = pool.acquire().await?;
    // Keys are per customer: whatever is found here is this customer's own order, so naming it
    // in the error below tells nobody anything about another customer.
    let Some(id) =
        db::order_id_by_key(&mut conn, &request.customer_id, &request.idempotency_key).await?
    else {
        return Ok(None);
    };
    let order = db::load_order(&mut conn, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
    if order.order.request_fingerprint != request.fingerprint() {
        return Err(ServiceError::Precondition {
            kind: "IDEMPOTENCY_KEY_REUSED",
            subject: format!("idempotency_keys/{}", request.idempotency_key),
            description: format!(
                "idempotency key {} was used for a different order ({id}); use a new key for a new order",
                request.idempotency_key
            ),
        });
    }
    Ok(Some(order))
}

fn parse_order_id(raw: &str) -> Result<Uuid, ServiceError> {
    let mut violations = FieldViolations::new();
    violations
        .check(
            "order_id",
            Uuid::try_parse(raw).map_err(|_| "must be a UUID"),
        )
        .ok_or(ServiceError::Invalid(violations))
}

/// The order `order_id`, if `caller` may see it (its customer, or an operator).
///
/// # Errors
/// `Invalid` for a malformed id, `NotFound` for no such order and for another customer's (the
/// same answer, so a customer learns nothing of orders not theirs).
pub async fn get_order(
    pool: &PgPool,
    order_id: &str,
    caller: &Caller,
) -> Result<Order, ServiceError> {
    let id = parse_order_id(order_id)?;
    let mut conn = pool.acquire().await?;
    db::load_order(&mut conn, id)
        .await?
        .filter(|order| caller.sees_customer(&order.order.customer_id))
        .map(Order::try_from)
        .transpose()?
        .ok_or_else(|| ServiceError::not_found("order", order_id))
}

/// A page of a customer's orders, newest first, and the next page's token (empty at the end).
///
/// # Errors
/// `Invalid` for a bad customer id, page size or token.
pub async fn list_orders(
    pool: &PgPool,
    customer_id: &str,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<Order>, String), ServiceError> {
    let mut violations = FieldViolations::new();
    let customer_id = violations.check("customer_id", CustomerId::parse(customer_id));
    if page_size > 100 {
        violations.add("page_size", "must be at most 100");
    }
    let cursor = if page_token.is_empty() {
        None
    } else {
        let cursor = decode_token(page_token);
        if cursor.is_none() {
            violations.add("page_token", "is not a token from a previous page");
        }
        cursor
    };
    let Some(customer_id) = customer_id.filter(|_| violations.is_empty()) else {
        return Err(ServiceError::Invalid(violations));
    };
    let limit = if page_size == 0 {
        20
    } else {
        i64::from(page_size)
    };
    let mut conn = pool.acquire().await?;
    let ids = db::order_ids_of_customer(&mut conn, &customer_id, cursor, limit).await?;
    let mut orders = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(order) = db::load_order(&mut conn, *id).await? {
            orders.push(order);
        }
    }
    let next = match orders.last() {
        Some(last) if i64::try_from(orders.len()).unwrap_or(0) == limit => {
            encode_token(&last.order)
        }
        _ => String::new(),
    };
    let orders = orders
        .into_iter()
        .map(Order::try_from)
        .collect::<sqlx::Result<_>>()?;
    Ok((orders, next))
}

/// The listing name in ListOrders' page tokens.
const ORDERS: &str = "orders";

/// The token continuing after `order`: its place in (created_at, order_id) order.
fn encode_token(order: &OrderRow) -> String {
    page_token::encode(
        ORDERS,
        &[
            &order.created_at.timestamp_micros().to_string(),
            &order.order_id.simple().to_string(),
        ],
    )
}

fn decode_token(token: &str) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let fields = page_token::decode(ORDERS, token, 2)?;
    Some((
        chrono::DateTime::from_timestamp_micros(fields[0].parse().ok()?)?,
        Uuid::try_parse(&fields[1]).ok()?,
    ))
}

/// Cancels an order at the customer's request. A confirmed order is refunded and its stock
/// returned (by payment and inventory, reacting to `OrderCancelled`). Idempotent: a retry of a
/// cancel that succeeded (its answer lost, say to a deadline after the commit) returns the
/// cancelled order and cancels nothing again.
///
/// `caller` is the order's customer or an operator acting for them; for anyone else the order
/// does not exist.
///
/// # Errors
/// `Invalid`, `NotFound` (also for another customer's order), or `Precondition` when the saga
/// cancelled it already (out of stock, declined, timed out): the customer's cancel changes
/// nothing, and says so.
pub async fn cancel_order(
    pool: &PgPool,
    events: &Events,
    order_id: &str,
    caller: &Caller,
) -> Result<Order, ServiceError> {
    let id = parse_order_id(order_id)?;
    let order =
        shop_eventing::committing(cancel_by_customer(pool, events, id, order_id, caller)).await?;
    Ok(order.try_into()?)
}

async fn cancel_by_customer(
    pool: &PgPool,
    events: &Events,
    id: Uuid,
    order_id: &str,
    caller: &Caller,
) -> Result<FullOrder, ServiceError> {
    let mut tx = pool.begin().await?;
    // Whose it is, before anything about its state is told.
    let order = db::lock_order(&mut tx, id)
        .await?
        .filter(|order| caller.sees_customer(&order.customer_id))
        .ok_or_else(|| ServiceError::not_found("order", order_id))?;
    if OrderStatus::parse(&order.status)? == OrderStatus::Cancelled {
        let reason = order.cancellation_reason.as_deref();
        if reason.and_then(CancellationReason::parse) == Some(CancellationReason::CustomerCancelled)
        {
            // A retry: the cancel it repeats committed. Nothing to write; answer as then.
            return db::load_order(&mut tx, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("order vanished").into());
        }
        return Err(ServiceError::Precondition {
            kind: "ORDER_ALREADY_CANCELLED",
            subject: format!("orders/{id}"),
            description: format!(
                "order {id} is already cancelled ({})",
                order.cancellation_reason.unwrap_or_default()
            ),
        });
    }
    cancel(
        &mut tx,
        events,
        &order,
        CancellationReason::CustomerCancelled,
        if caller.require_customer(&order.customer_id).is_ok() {
            "cancelled by the customer"
        } else {
            "cancelled by an operator for the customer"
        },
    )
    .await?;
    let full = db::load_order(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
    tx.commit().await?;
    Ok(full)
}

async fn cancel(
    tx: &mut PgConnection,
    events: &Events,
    order: &OrderRow,
    reason: CancellationReason,
    detail: &str,
) -> sqlx::Result<()> {
    let was_confirmed = order.status == OrderStatus::Confirmed.as_str();
    db::set_status(
        tx,
        order.order_id,
        OrderStatus::Cancelled.as_str(),
        Some(reason.as_str()),
        &format!("{}: {detail}", reason.as_str()),
    )
    .await?;
    let event = pb::OrderCancelled {
        order_id: order.order_id.to_string(),
        customer_id: order.customer_id.clone(),
        reason: pb::CancellationReason::from(reason).into(),
        detail: detail.to_owned(),
        was_confirmed,
    };
    events.publisher.append(tx, order.order_id, &event).await?;
    events.metrics.cancelled(reason);
    tracing::info!(order_id = %order.order_id, reason = reason.as_str(), was_confirmed, "Order cancelled.");
    Ok(())
}

/// The next step of the saga, decided by what another service reported about an order.
#[derive(Clone, Debug)]
pub enum SagaReply {
    StockReserved,
    StockRejected { detail: String },
    PaymentCaptured,
    PaymentDeclined { detail: String },
}

/// Advances the saga of `order_id`. Replies that arrive for an order no longer waiting for them
/// change nothing, with one exception: a capture or a reservation that reaches an order already
/// CANCELLED (a re-driven dead letter, a replay, a reply that raced the customer's cancel) is
/// compensated. The order asks payment for the refund (`RefundRequested`) or inventory for the
/// release (`StockReleaseRequested`). Both are idempotent by state, so asking when the
/// `OrderCancelled` already undid it costs nothing, and the money or stock is never left behind.
///
/// # Errors
/// Database errors; an unknown order is an error too (the reply cannot be about nothing).
pub async fn on_reply(
    tx: &mut PgConnection,
    events: &Events,
    order_id: Uuid,
    reply: SagaReply,
) -> anyhow::Result<()> {
    let order = db::lock_order(tx, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("reply for unknown order {order_id}"))?;
    match (OrderStatus::parse(&order.status)?, &reply) {
        (OrderStatus::Pending, _) => {}
        (OrderStatus::Cancelled, SagaReply::PaymentCaptured) => {
            let request = pb::RefundRequested {
                order_id: order_id.to_string(),
                customer_id: order.customer_id.clone(),
            };
            events.publisher.append(tx, order_id, &request).await?;
            events.metrics.late_compensation(LateCompensation::Refund);
            tracing::warn!(%order_id, "Payment captured for a cancelled order; refund requested.");
            return Ok(());
        }
        (OrderStatus::Cancelled, SagaReply::StockReserved) => {
            let request = pb::StockReleaseRequested {
                order_id: order_id.to_string(),
            };
            events.publisher.append(tx, order_id, &request).await?;
            events.metrics.late_compensation(LateCompensation::Release);
            tracing::warn!(%order_id, "Stock reserved for a cancelled order; release requested.");
            return Ok(());
        }
        (status, _) => {
            tracing::debug!(%order_id, ?status, ?reply, "Reply for a finished order; nothing to do.");
            return Ok(());
        }
    }
    match reply {
        SagaReply::StockReserved if !order.payment_requested => {
            db::mark_payment_requested(tx, order_id).await?;
            let request = pb::PaymentRequested {
                order_id: order_id.to_string(),
                customer_id: order.customer_id.clone(),
                amount: money(order.total_minor, &order.currency),
            };
            events.publisher.append(tx, order_id, &request).await?;
        }
        SagaReply::StockReserved => {}
        SagaReply::StockRejected { detail } => {
            cancel(tx, events, &order, CancellationReason::OutOfStock, &detail).await?
        }
        SagaReply::PaymentCaptured => {
            db::set_status(
                tx,
                order_id,
                OrderStatus::Confirmed.as_str(),
                None,
                "payment captured",
            )
            .await?;
            let lines = db::order_lines(tx, order_id).await?;
            let confirmed = pb::OrderConfirmed {
                order_id: order_id.to_string(),
                customer_id: order.customer_id.clone(),
                lines: event_lines(&lines, &order.currency),
                total: money(order.total_minor, &order.currency),
            };
            events.publisher.append(tx, order_id, &confirmed).await?;
            events.metrics.confirmed();
            tracing::info!(%order_id, "Order confirmed.");
        }
        SagaReply::PaymentDeclined { detail } => {
            cancel(
                tx,
                events,
                &order,
                CancellationReason::PaymentDeclined,
                &detail,
            )
            .await?
        }
    }
    Ok(())
}

/// When a saga is given up on, and how the sweeper looks for such sagas.
#[derive(Clone, Copy, Debug)]
pub struct SagaDeadline {
    /// An order still PENDING this long after it was placed is cancelled (reason `timeout`).
    pub deadline: Duration,
    /// How often the sweeper looks.
    pub interval: Duration,
    /// Most orders cancelled in one transaction.
    pub batch: u32,
}

/// The sweeper: every `interval`, cancels the orders PENDING past the deadline (with
/// `OrderCancelled`, so inventory and payment compensate whatever they did; their tombstones
/// make a step that arrives even later harmless), then records the gauges of pending orders.
/// Safe with any number of replicas: each locks the orders it cancels and skips those another
/// holds. Database failures are logged and retried at the next round.
///
/// # Errors
/// Never: failures are retried. The `Result` lets it run as a service task.
pub async fn sweep_overdue(
    pool: PgPool,
    events: Events,
    deadline: SagaDeadline,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match cancel_overdue(&pool, &events, deadline).await {
            Ok(0) => {}
            Ok(cancelled) => tracing::info!(
                cancelled,
                deadline = ?deadline.deadline,
                "Cancelled orders still pending at the saga deadline."
            ),
            Err(error) => tracing::warn!(?error, "The saga deadline sweep failed; retrying."),
        }
        match pending_ages(&pool, deadline.deadline).await {
            Ok((overdue, oldest)) => events.metrics.pending(oldest, overdue),
            Err(error) => tracing::warn!(%error, "Could not read the pending orders' ages."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(deadline.interval) => {}
        }
    }
}

async fn pending_ages(pool: &PgPool, deadline: Duration) -> sqlx::Result<(i64, f64)> {
    let mut conn = pool.acquire().await?;
    db::pending_ages(&mut conn, deadline).await
}

/// One sweep: cancels every order PENDING past the deadline, `batch` per transaction, and
/// returns how many.
///
/// # Errors
/// Database errors (what committed before stays cancelled).
pub async fn cancel_overdue(
    pool: &PgPool,
    events: &Events,
    deadline: SagaDeadline,
) -> Result<usize, ServiceError> {
    let batch = i64::from(deadline.batch.max(1));
    let mut total = 0;
    loop {
        let cancelled =
            shop_eventing::committing(cancel_overdue_batch(pool, events, deadline.deadline, batch))
                .await?;
        total += cancelled;
        if i64::try_from(cancelled).unwrap_or(i64::MAX) < batch {
            return Ok(total);
        }
    }
}

async fn cancel_overdue_batch(
    pool: &PgPool,
    events: &Events,
    deadline: Duration,
    batch: i64,
) -> Result<usize, ServiceError> {
    let mut tx = pool.begin().await?;
    let overdue = db::lock_overdue(&mut tx, deadline, batch).await?;
    let detail = format!("the saga did not end within {} s", deadline.as_secs_f64());
    for order in &overdue {
        cancel(&mut tx, events, order, CancellationReason::Timeout, &detail).await?;
    }
    tx.commit().await?;
    Ok(overdue.len())
}
