//! The order service's use cases and the saga's orchestration. Every state change and the event
//! it causes are written in one transaction.

use std::time::Duration;

use shop_eventing::{NewEvent, Outbox};
use shop_proto::common::v1::Money;
use shop_proto::order::v1 as pb;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::adapters::inventory::InventoryCatalog;
use crate::adapters::postgres::{self as db, FullOrder, OrderRow};
use crate::domain::{CancellationReason, OrderRequest, OrderStatus, price};
use crate::metrics::OrderMetrics;

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    #[error("order {0} not found")]
    NotFound(String),
    #[error("{description}")]
    Precondition {
        kind: &'static str,
        subject: String,
        description: String,
    },
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unexpected(error.into())
    }
}

/// Where the order's events go, and its outcomes are counted.
#[derive(Clone, Debug)]
pub struct Events {
    pub outbox: Outbox,
    pub topic: String,
    pub metrics: OrderMetrics,
}

impl Events {
    async fn append<M: prost::Message + prost::Name>(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        event: &M,
    ) -> sqlx::Result<()> {
        self.outbox
            .append(tx, NewEvent::new(&self.topic, order_id.to_string(), event))
            .await
            .map(|_| ())
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn event_lines(order: &FullOrder) -> Vec<pb::OrderLine> {
    order
        .lines
        .iter()
        .map(|l| pb::OrderLine {
            sku: l.sku.clone(),
            quantity: u32::try_from(l.quantity).unwrap_or(0),
            unit_price: money(l.unit_price_minor, &order.order.currency),
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
    request: OrderRequest,
) -> Result<FullOrder, OrderError> {
    if let Some(existing) = existing_for_key(pool, &request).await? {
        return Ok(existing);
    }
    let prices = catalog
        .prices(&request.skus())
        .await
        .map_err(|e| OrderError::Unavailable {
            reason: e.to_string(),
            retry_after: e.retry_after,
        })?;
    let priced = price(&request, &prices).map_err(OrderError::Invalid)?;

    shop_eventing::committing(record_order(pool, events, &request, &priced)).await
}

async fn record_order(
    pool: &PgPool,
    events: &Events,
    request: &OrderRequest,
    priced: &crate::domain::Priced,
) -> Result<FullOrder, OrderError> {
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    if !db::insert_order(&mut tx, order_id, request, priced).await? {
        // A concurrent retry under the same key committed first.
        drop(tx);
        return existing_for_key(pool, request)
            .await?
            .ok_or_else(|| anyhow::anyhow!("idempotency key vanished").into());
    }
    let order = db::load_order(&mut tx, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
    let placed = pb::OrderPlaced {
        order_id: order_id.to_string(),
        customer_id: request.customer_id.clone(),
        lines: event_lines(&order),
        total: money(priced.total_minor, &priced.currency),
    };
    events.append(&mut tx, order_id, &placed).await?;
    events.metrics.placed();
    tx.commit().await?;
    tracing::info!(%order_id, customer_id = %request.customer_id, total_minor = priced.total_minor, "Order placed.");
    Ok(order)
}

async fn existing_for_key(
    pool: &PgPool,
    request: &OrderRequest,
) -> Result<Option<FullOrder>, OrderError> {
    let mut conn = pool.acquire().await?;
    let Some(id) = db::order_id_by_key(&mut conn, &request.idempotency_key).await? else {
        return Ok(None);
    };
    let order = db::load_order(&mut conn, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
    if order.order.request_fingerprint != request.fingerprint() {
        return Err(OrderError::Precondition {
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

fn parse_order_id(raw: &str) -> Result<Uuid, OrderError> {
    Uuid::parse_str(raw)
        .map_err(|_| OrderError::Invalid(vec![("order_id".into(), "must be a UUID".into())]))
}

/// # Errors
/// `Invalid` for a malformed id, `NotFound`.
pub async fn get_order(pool: &PgPool, order_id: &str) -> Result<FullOrder, OrderError> {
    let id = parse_order_id(order_id)?;
    let mut conn = pool.acquire().await?;
    db::load_order(&mut conn, id)
        .await?
        .ok_or_else(|| OrderError::NotFound(order_id.to_owned()))
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
) -> Result<(Vec<FullOrder>, String), OrderError> {
    let mut violations = Vec::new();
    if let Err(e) = crate::domain::parse_id(customer_id) {
        violations.push(("customer_id".to_owned(), e));
    }
    if page_size > 100 {
        violations.push(("page_size".to_owned(), "must be at most 100".to_owned()));
    }
    let cursor = if page_token.is_empty() {
        None
    } else {
        match decode_token(page_token) {
            Some(cursor) => Some(cursor),
            None => {
                violations.push((
                    "page_token".to_owned(),
                    "is not a token from a previous page".to_owned(),
                ));
                None
            }
        }
    };
    if !violations.is_empty() {
        return Err(OrderError::Invalid(violations));
    }
    let limit = if page_size == 0 {
        20
    } else {
        i64::from(page_size)
    };
    let mut conn = pool.acquire().await?;
    let ids = db::order_ids_of_customer(&mut conn, customer_id, cursor, limit).await?;
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
    Ok((orders, next))
}

fn encode_token(order: &OrderRow) -> String {
    format!(
        "{}_{}",
        order.created_at.timestamp_micros(),
        order.order_id.simple()
    )
}

fn decode_token(token: &str) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let (micros, id) = token.split_once('_')?;
    Some((
        chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// Cancels an order at the customer's request. A confirmed order is refunded and its stock
/// returned (by payment and inventory, reacting to `OrderCancelled`).
///
/// # Errors
/// `Invalid`, `NotFound`, or `Precondition` when it is already cancelled.
pub async fn cancel_order(
    pool: &PgPool,
    events: &Events,
    order_id: &str,
) -> Result<FullOrder, OrderError> {
    let id = parse_order_id(order_id)?;
    shop_eventing::committing(cancel_by_customer(pool, events, id, order_id)).await
}

async fn cancel_by_customer(
    pool: &PgPool,
    events: &Events,
    id: Uuid,
    order_id: &str,
) -> Result<FullOrder, OrderError> {
    let mut tx = pool.begin().await?;
    let order = db::lock_order(&mut tx, id)
        .await?
        .ok_or_else(|| OrderError::NotFound(order_id.to_owned()))?;
    if OrderStatus::parse(&order.status)? == OrderStatus::Cancelled {
        return Err(OrderError::Precondition {
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
        "cancelled by the customer",
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
        reason: match reason {
            CancellationReason::OutOfStock => pb::CancellationReason::OutOfStock,
            CancellationReason::PaymentDeclined => pb::CancellationReason::PaymentDeclined,
            CancellationReason::CustomerCancelled => pb::CancellationReason::CustomerCancelled,
        }
        .into(),
        detail: detail.to_owned(),
        was_confirmed,
    };
    events.append(tx, order.order_id, &event).await?;
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
/// (e.g. a capture after the customer cancelled: payment refunds it on `OrderCancelled`) change
/// nothing.
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
    if OrderStatus::parse(&order.status)? != OrderStatus::Pending {
        tracing::debug!(%order_id, status = %order.status, ?reply, "Reply for a finished order; nothing to do.");
        return Ok(());
    }
    match reply {
        SagaReply::StockReserved if !order.payment_requested => {
            db::mark_payment_requested(tx, order_id).await?;
            let request = pb::PaymentRequested {
                order_id: order_id.to_string(),
                customer_id: order.customer_id.clone(),
                amount: money(order.total_minor, &order.currency),
            };
            events.append(tx, order_id, &request).await?;
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
            let full = db::load_order(tx, order_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
            let confirmed = pb::OrderConfirmed {
                order_id: order_id.to_string(),
                customer_id: order.customer_id.clone(),
                lines: event_lines(&full),
                total: money(order.total_minor, &order.currency),
            };
            events.append(tx, order_id, &confirmed).await?;
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
