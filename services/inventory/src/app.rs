//! Inventory's use cases (catalog RPCs) and saga steps. Each saga step runs in the consumer's
//! transaction and appends the event it causes to the outbox in that same transaction.

use shop_eventing::Publisher;
use shop_proto::inventory::v1 as pb;
use shop_proto::order::v1 as order_pb;
use shop_runtime::page_token;
use shop_runtime::status::{FieldViolations, ServiceError};
use sqlx::{PgConnection, PgPool};

use crate::domain::{
    AdjustmentReason, AdjustmentRefused, MAX_UNITS, Price, Product, ProductName, Reservation,
    ReservationPlan, Sku, StockDelta, adjust_on_hand, plan_reservation,
};
use crate::outbound::postgres::{self as db, StockMove};

/// Where inventory's events go, and its outcomes are counted.
#[derive(Clone, Debug)]
pub struct Events {
    pub publisher: Publisher,
    pub metrics: crate::metrics::InventoryMetrics,
}

/// Creates a product or changes its name and price.
///
/// # Errors
/// `Invalid` with every field violation.
pub async fn upsert_product(
    pool: &PgPool,
    sku: &str,
    name: &str,
    price: Option<(i64, &str)>,
) -> Result<Product, ServiceError> {
    let mut violations = FieldViolations::new();
    let sku = violations.check("sku", Sku::parse(sku));
    let name = violations.check("name", ProductName::parse(name));
    let price = match price {
        None => {
            violations.add("unit_price", "is required");
            None
        }
        Some((amount, currency)) => Price::parse(amount, currency)
            .map_err(|(field, e)| violations.add(format!("unit_price.{field}"), e))
            .ok(),
    };
    let (Some(sku), Some(name), Some(price)) = (sku, name, price) else {
        return Err(ServiceError::Invalid(violations));
    };
    let mut conn = pool.acquire().await?;
    Ok(db::upsert_product(
        &mut conn,
        sku.as_str(),
        name.as_str(),
        price.amount_minor,
        &price.currency,
    )
    .await?
    .into())
}

/// # Errors
/// `Invalid` for a malformed sku, `NotFound` for an unknown one.
pub async fn get_product(pool: &PgPool, sku: &str) -> Result<Product, ServiceError> {
    let mut violations = FieldViolations::new();
    let sku = violations
        .check("sku", Sku::parse(sku))
        .ok_or(ServiceError::Invalid(violations))?;
    let mut conn = pool.acquire().await?;
    db::product(&mut conn, sku.as_str(), false)
        .await?
        .map(Product::from)
        .ok_or_else(|| ServiceError::not_found("product", sku.as_str()))
}

/// The reservation of an order (for operators: `shopctl order`).
///
/// # Errors
/// `Invalid` for an empty or oversized order id, `NotFound` when the order has no reservation.
pub async fn get_reservation(pool: &PgPool, order_id: &str) -> Result<Reservation, ServiceError> {
    let mut violations = FieldViolations::new();
    if order_id.is_empty() || order_id.len() > 128 || order_id.chars().any(char::is_control) {
        violations.add("order_id", "1-128 characters, no control characters");
        return Err(ServiceError::Invalid(violations));
    }
    let mut conn = pool.acquire().await?;
    db::reservation(&mut conn, order_id)
        .await?
        .map(Reservation::from)
        .ok_or_else(|| ServiceError::not_found("reservation", order_id))
}

/// The listing name in products' page tokens.
const PRODUCTS: &str = "products";

/// A page of products (by sku) and the token of the next page.
///
/// # Errors
/// `Invalid` for a bad page size, sku or page token.
pub async fn list_products(
    pool: &PgPool,
    skus: &[String],
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<Product>, String), ServiceError> {
    let mut violations = FieldViolations::new();
    if page_size > 500 {
        violations.add("page_size", "must be at most 500");
    }
    if skus.len() > 500 {
        violations.add("skus", "must list at most 500 skus");
    }
    for (i, sku) in skus.iter().enumerate() {
        violations.check(format!("skus[{i}]"), Sku::parse(sku));
    }
    // The cursor is the last sku of the previous page; it reaches SQL only once it parsed as
    // a token this listing issued, holding a valid sku.
    let after = if page_token.is_empty() {
        String::new()
    } else {
        match page_token::decode(PRODUCTS, page_token, 1)
            .and_then(|mut fields| fields.pop())
            .filter(|sku| Sku::parse(sku).is_ok())
        {
            Some(sku) => sku,
            None => {
                violations.add("page_token", "is not a token from a previous page");
                String::new()
            }
        }
    };
    violations.into_result().map_err(ServiceError::Invalid)?;
    let limit = if page_size == 0 {
        100
    } else {
        i64::from(page_size)
    };
    let mut conn = pool.acquire().await?;
    let filter = (!skus.is_empty()).then_some(skus);
    let rows = db::products(&mut conn, filter, &after, limit).await?;
    let next = match rows.last() {
        Some(last) if i64::try_from(rows.len()).unwrap_or(0) == limit => {
            page_token::encode(PRODUCTS, &[&last.sku])
        }
        _ => String::new(),
    };
    Ok((rows.into_iter().map(Product::from).collect(), next))
}

/// Adds or removes units on hand; never below what is reserved, never above
/// [`MAX_UNITS`](crate::domain::MAX_UNITS).
///
/// # Errors
/// `Invalid`, `NotFound`, or `Precondition` when the removal would go below the reserved units
/// (`STOCK_RESERVED`) or the addition above the limit (`STOCK_LIMIT`).
pub async fn adjust_stock(
    pool: &PgPool,
    sku: &str,
    delta: i64,
    reason: &str,
) -> Result<Product, ServiceError> {
    let mut violations = FieldViolations::new();
    let sku = violations.check("sku", Sku::parse(sku));
    let delta = violations.check("delta", StockDelta::parse(delta));
    let reason = violations.check("reason", AdjustmentReason::parse(reason));
    let (Some(sku), Some(delta), Some(reason)) = (sku, delta, reason) else {
        return Err(ServiceError::Invalid(violations));
    };
    let mut tx = pool.begin().await?;
    let product = db::product(&mut tx, sku.as_str(), true)
        .await?
        .ok_or_else(|| ServiceError::not_found("product", sku.as_str()))?;
    match adjust_on_hand(product.on_hand, product.reserved, delta) {
        Ok(_) => {}
        Err(AdjustmentRefused::BelowReserved) => {
            return Err(ServiceError::Precondition {
                kind: "STOCK_RESERVED",
                subject: format!("products/{}", sku.as_str()),
                description: format!(
                    "cannot remove {} units: {} on hand, {} reserved for orders in flight",
                    delta.get().unsigned_abs(),
                    product.on_hand,
                    product.reserved
                ),
            });
        }
        Err(AdjustmentRefused::AboveLimit) => {
            return Err(ServiceError::Precondition {
                kind: "STOCK_LIMIT",
                subject: format!("products/{}", sku.as_str()),
                description: format!(
                    "cannot add {} units: {} on hand, at most {MAX_UNITS} may be",
                    delta.get(),
                    product.on_hand
                ),
            });
        }
    }
    let row = db::adjust_on_hand(&mut tx, sku.as_str(), delta.get(), reason.as_str()).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Saga step for `OrderPlaced`: reserves every line or none, and says which. An order decided
/// already changes nothing; one closed by a release that came first (the reservation's
/// tombstone) reserves nothing and says nothing: its order is cancelled.
///
/// # Errors
/// Database errors (the consumer retries them).
pub async fn reserve(
    tx: &mut PgConnection,
    events: &Events,
    placed: &order_pb::OrderPlaced,
) -> sqlx::Result<()> {
    if let Some((status, _)) = db::lock_reservation(tx, &placed.order_id).await? {
        if status == "cancelled" {
            tracing::info!(
                order_id = %placed.order_id,
                "OrderPlaced for an order closed by an earlier release; nothing reserved."
            );
            events.metrics.late_request();
        }
        return Ok(()); // already decided for this order
    }
    let lines: Vec<(String, i64)> = placed
        .lines
        .iter()
        .map(|l| (l.sku.clone(), i64::from(l.quantity)))
        .collect();
    let skus: Vec<String> = lines.iter().map(|(s, _)| s.clone()).collect();
    let stock = db::lock_stock(tx, &skus).await?;
    match plan_reservation(&lines, &stock) {
        ReservationPlan::Reserve(wanted) => {
            let lines: Vec<(String, i64)> = wanted.into_iter().collect();
            if !db::insert_reservation(tx, &placed.order_id, "reserved", &lines).await? {
                return Ok(()); // already decided for this order
            }
            let moves: Vec<StockMove> = lines
                .iter()
                .map(|(sku, q)| StockMove {
                    sku: sku.clone(),
                    on_hand: 0,
                    reserved: *q,
                    sold: 0,
                })
                .collect();
            db::move_stock(tx, &moves).await?;
            let event = pb::StockReserved {
                order_id: placed.order_id.clone(),
                lines: reserved_lines(&lines),
            };
            events.metrics.reserved();
            events.publisher.append(tx, &placed.order_id, &event).await
        }
        ReservationPlan::Reject(shortfalls) => {
            if !db::insert_reservation(tx, &placed.order_id, "rejected", &[]).await? {
                return Ok(());
            }
            let event = pb::StockRejected {
                order_id: placed.order_id.clone(),
                lines: shortfalls
                    .into_iter()
                    .map(|s| pb::RejectedLine {
                        sku: s.sku,
                        requested: u32::try_from(s.requested).unwrap_or(u32::MAX),
                        available: u32::try_from(s.available).unwrap_or(u32::MAX),
                        reason: s.reason.into(),
                    })
                    .collect(),
            };
            events.metrics.rejected();
            events.publisher.append(tx, &placed.order_id, &event).await
        }
    }
}

/// Saga step for `OrderConfirmed`: the reserved units leave with the order.
///
/// # Errors
/// Database errors.
pub async fn sell(tx: &mut PgConnection, order_id: &str) -> sqlx::Result<()> {
    let Some((status, lines)) = db::lock_reservation(tx, order_id).await? else {
        return Ok(());
    };
    if status != "reserved" {
        return Ok(());
    }
    let moves: Vec<StockMove> = lines
        .iter()
        .map(|(sku, q)| StockMove {
            sku: sku.clone(),
            on_hand: -q,
            reserved: -q,
            sold: *q,
        })
        .collect();
    db::move_stock(tx, &moves).await?;
    db::set_reservation_status(tx, order_id, "sold").await
}

/// Saga step for `OrderCancelled` and `StockReleaseRequested`: releases a reservation, or takes
/// sold units back. Nothing to undo for an order whose stock was rejected or released already;
/// for an order inventory has no reservation of (its `OrderPlaced` not applied yet: a dead
/// letter, a replay), records a tombstone, so that the late `OrderPlaced` reserves nothing.
///
/// # Errors
/// Database errors.
pub async fn release(tx: &mut PgConnection, events: &Events, order_id: &str) -> sqlx::Result<()> {
    let (status, lines) = match db::lock_reservation(tx, order_id).await? {
        Some(found) => found,
        None => {
            if db::insert_reservation(tx, order_id, "cancelled", &[]).await? {
                tracing::info!(
                    order_id,
                    "Release of an order with no reservation; closed it against a late OrderPlaced."
                );
                return Ok(());
            }
            // A reservation was inserted concurrently (and is committed now): undo that one.
            db::lock_reservation(tx, order_id)
                .await?
                .ok_or_else(|| sqlx::Error::RowNotFound)?
        }
    };
    let (moves, next, was_sold): (Vec<StockMove>, _, _) = match status.as_str() {
        "reserved" => (
            lines
                .iter()
                .map(|(sku, q)| StockMove {
                    sku: sku.clone(),
                    on_hand: 0,
                    reserved: -q,
                    sold: 0,
                })
                .collect(),
            "released",
            false,
        ),
        "sold" => (
            lines
                .iter()
                .map(|(sku, q)| StockMove {
                    sku: sku.clone(),
                    on_hand: *q,
                    reserved: 0,
                    sold: -q,
                })
                .collect(),
            "returned",
            true,
        ),
        _ => return Ok(()),
    };
    db::move_stock(tx, &moves).await?;
    db::set_reservation_status(tx, order_id, next).await?;
    let event = pb::StockReleased {
        order_id: order_id.to_owned(),
        lines: reserved_lines(&lines),
        was_sold,
    };
    events.metrics.released();
    events.publisher.append(tx, order_id, &event).await
}

fn reserved_lines(lines: &[(String, i64)]) -> Vec<pb::ReservedLine> {
    lines
        .iter()
        .map(|(sku, q)| pb::ReservedLine {
            sku: sku.clone(),
            quantity: u32::try_from(*q).unwrap_or(u32::MAX),
        })
        .collect()
}

/// The skus an order's reservation holds (none without one): the stock rows its later saga
/// steps (sell, release) lock.
///
/// # Errors
/// Database errors.
pub async fn reserved_skus(tx: &mut PgConnection, order_id: &str) -> sqlx::Result<Vec<String>> {
    db::reserved_skus(tx, order_id).await
}
