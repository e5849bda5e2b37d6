//! Inventory's SQL. Functions take a connection so callers decide the transaction.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::domain::{Product, Reservation, Stock, StockLevel};

/// A product row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Self {
            sku: row.sku,
            name: row.name,
            unit_price_minor: row.unit_price_minor,
            currency: row.currency,
            stock: Stock {
                on_hand: row.on_hand,
                reserved: row.reserved,
                sold: row.sold,
            },
        }
    }
}

#[shop_telemetry::db_span("INSERT", "products")]
pub async fn upsert_product(
    conn: &mut PgConnection,
    sku: &str,
    name: &str,
    unit_price_minor: i64,
    currency: &str,
) -> sqlx::Result<ProductRow> {
    sqlx::query_as(
        "INSERT INTO products (sku, name, unit_price_minor, currency) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, unit_price_minor = EXCLUDED.unit_price_minor, \
         currency = EXCLUDED.currency, updated_at = now() \
         RETURNING sku, name, unit_price_minor, currency, on_hand, reserved, sold",
    )
    .bind(sku)
    .bind(name)
    .bind(unit_price_minor)
    .bind(currency)
    .fetch_one(conn)
    .await
}

/// The product, locked for update when `lock`.
#[shop_telemetry::db_span("SELECT", "products")]
pub async fn product(
    conn: &mut PgConnection,
    sku: &str,
    lock: bool,
) -> sqlx::Result<Option<ProductRow>> {
    let sql = if lock {
        "SELECT sku, name, unit_price_minor, currency, on_hand, reserved, sold FROM products WHERE sku = $1 FOR UPDATE"
    } else {
        "SELECT sku, name, unit_price_minor, currency, on_hand, reserved, sold FROM products WHERE sku = $1"
    };
    sqlx::query_as(sql).bind(sku).fetch_optional(conn).await
}

/// Products whose sku is in `skus` (all when `None`), after `after`, by sku.
#[shop_telemetry::db_span("SELECT", "products")]
pub async fn products(
    conn: &mut PgConnection,
    skus: Option<&[String]>,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<ProductRow>> {
    sqlx::query_as(
        "SELECT sku, name, unit_price_minor, currency, on_hand, reserved, sold FROM products \
         WHERE ($1::text[] IS NULL OR sku = ANY($1)) AND sku > $2 ORDER BY sku LIMIT $3",
    )
    .bind(skus)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Changes on_hand by `delta` and records the adjustment.
#[shop_telemetry::db_span("UPDATE", "products")]
pub async fn adjust_on_hand(
    conn: &mut PgConnection,
    sku: &str,
    delta: i64,
    reason: &str,
) -> sqlx::Result<ProductRow> {
    sqlx::query("INSERT INTO stock_adjustments (sku, delta, reason) VALUES ($1, $2, $3)")
        .bind(sku)
        .bind(delta)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(
        "UPDATE products SET on_hand = on_hand + $2, updated_at = now() WHERE sku = $1 \
         RETURNING sku, name, unit_price_minor, currency, on_hand, reserved, sold",
    )
    .bind(sku)
    .bind(delta)
    .fetch_one(conn)
    .await
}

/// Locks the stock rows of `skus`, in sku order, so that two transactions that each reserve one
/// order's lines lock overlapping skus in the same order. That alone does not keep a consumer's
/// batch (many orders in one transaction, each locking its own skus) from deadlocking with
/// another replica's: the consumer first takes an advisory lock on every sku of its batch, in
/// one global order (`OrderEvents::lock_keys`).
#[shop_telemetry::db_span("SELECT", "products")]
pub async fn lock_stock(
    conn: &mut PgConnection,
    skus: &[String],
) -> sqlx::Result<BTreeMap<String, StockLevel>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT sku, on_hand, reserved FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, on_hand, reserved)| (sku, StockLevel { on_hand, reserved }))
        .collect())
}

/// The skus an order's reservation holds (none when it has none), read without locking.
pub async fn reserved_skus(conn: &mut PgConnection, order_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT sku FROM reservation_lines WHERE order_id = $1")
        .bind(order_id)
        .fetch_all(conn)
        .await
}

/// A reservation as operators read it.
#[derive(Debug, Clone)]
pub struct ReservationRow {
    pub order_id: String,
    pub status: String,
    /// (sku, quantity), by sku.
    pub lines: Vec<(String, i64)>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<ReservationRow> for Reservation {
    fn from(row: ReservationRow) -> Self {
        Self {
            order_id: row.order_id,
            status: row.status,
            lines: row.lines,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The reservation of an order with its lines, read without locking.
pub async fn reservation(
    conn: &mut PgConnection,
    order_id: &str,
) -> sqlx::Result<Option<ReservationRow>> {
    let row: Option<(
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT status, created_at, updated_at FROM reservations WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, created_at, updated_at)) = row else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(Some(ReservationRow {
        order_id: order_id.to_owned(),
        status,
        lines,
        created_at,
        updated_at,
    }))
}

/// A reservation's status and its lines (sku, quantity).
pub type LockedReservation = (String, Vec<(String, i64)>);

/// The reservation of an order, locked: its status and lines.
#[shop_telemetry::db_span("SELECT", "reservations")]
pub async fn lock_reservation(
    conn: &mut PgConnection,
    order_id: &str,
) -> sqlx::Result<Option<LockedReservation>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(Some((status, lines)))
}

/// Records a reservation (status `reserved` or `rejected`, or the line-less tombstone
/// `cancelled`); `false` if the order already has one.
#[shop_telemetry::db_span("INSERT", "reservations")]
pub async fn insert_reservation(
    conn: &mut PgConnection,
    order_id: &str,
    status: &str,
    lines: &[(String, i64)],
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO reservations (order_id, status) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(status)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if inserted && !lines.is_empty() {
        let (skus, quantities): (Vec<String>, Vec<i64>) = lines.iter().cloned().unzip();
        sqlx::query(
            "INSERT INTO reservation_lines (order_id, sku, quantity) SELECT $1, * FROM unnest($2::text[], $3::bigint[])",
        )
        .bind(order_id)
        .bind(&skus)
        .bind(&quantities)
        .execute(conn)
        .await?;
    }
    Ok(inserted)
}

#[shop_telemetry::db_span("UPDATE", "reservations")]
pub async fn set_reservation_status(
    conn: &mut PgConnection,
    order_id: &str,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

/// One sku's change of the stock buckets.
#[derive(Clone, Debug)]
pub struct StockMove {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// Applies `moves` to the stock buckets.
#[shop_telemetry::db_span("UPDATE", "products")]
pub async fn move_stock(conn: &mut PgConnection, moves: &[StockMove]) -> sqlx::Result<()> {
    for m in moves {
        sqlx::query(
            "UPDATE products SET on_hand = on_hand + $2, reserved = reserved + $3, sold = sold + $4, \
             updated_at = now() WHERE sku = $1",
        )
        .bind(&m.sku)
        .bind(m.on_hand)
        .bind(m.reserved)
        .bind(m.sold)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
