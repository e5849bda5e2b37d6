//! The order service's SQL. Functions take a connection so callers decide the transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    CancellationReason, CustomerId, Order, OrderRequest, OrderStatus, OrderedLine, Priced, Sku,
    StatusChange,
};

/// An order row as stored; its customer id is parsed when it becomes an [`Order`].
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub cancellation_reason: Option<String>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_requested: bool,
    pub request_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order line row as stored; its sku is parsed when it becomes an [`OrderedLine`].
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LineRow {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub status: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// An order with its lines and status history.
#[derive(Clone, Debug)]
pub struct FullOrder {
    pub order: OrderRow,
    pub lines: Vec<LineRow>,
    pub history: Vec<HistoryRow>,
}

/// A stored id that does not parse (only parsed ids are stored): the row cannot be decoded.
fn undecodable(column: &str, problem: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: problem.into(),
    }
}

impl TryFrom<FullOrder> for Order {
    type Error = sqlx::Error;

    fn try_from(full: FullOrder) -> sqlx::Result<Self> {
        let o = full.order;
        Ok(Self {
            order_id: o.order_id,
            customer_id: CustomerId::parse(&o.customer_id)
                .map_err(|e| undecodable("customer_id", e))?,
            lines: full
                .lines
                .into_iter()
                .map(|l| {
                    Ok(OrderedLine {
                        sku: Sku::parse(&l.sku).map_err(|e| undecodable("sku", e))?,
                        quantity: u32::try_from(l.quantity).unwrap_or(0),
                        unit_price_minor: l.unit_price_minor,
                    })
                })
                .collect::<sqlx::Result<_>>()?,
            total_minor: o.total_minor,
            currency: o.currency,
            status: OrderStatus::parse(&o.status).ok(),
            cancellation_reason: o
                .cancellation_reason
                .as_deref()
                .and_then(CancellationReason::parse),
            history: full
                .history
                .into_iter()
                .map(|h| StatusChange {
                    status: OrderStatus::parse(&h.status).ok(),
                    reason: h.reason,
                    at: h.at,
                })
                .collect(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        })
    }
}

const ORDER_COLUMNS: &str = "order_id, customer_id, status, cancellation_reason, total_minor, currency, \
                             payment_requested, request_fingerprint, created_at, updated_at";

/// Inserts a new pending order with its lines and first history entry, and answers it as
/// stored: read back from the statements' own `RETURNING` (its lines are the ones just
/// written), not by reading the order again. `None` when another order of the customer already
/// holds the idempotency key (a concurrent retry won).
#[shop_telemetry::db_span("INSERT", "orders")]
pub async fn insert_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    request: &OrderRequest,
    priced: &Priced,
) -> sqlx::Result<Option<FullOrder>> {
    let inserted: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders (order_id, customer_id, status, total_minor, currency, idempotency_key, request_fingerprint) \
         VALUES ($1, $2, 'pending', $3, $4, $5, $6) ON CONFLICT (customer_id, idempotency_key) DO NOTHING \
         RETURNING {ORDER_COLUMNS}"
    )))
    .bind(order_id)
    .bind(request.customer_id.as_str())
    .bind(priced.total_minor)
    .bind(&priced.currency)
    .bind(&request.idempotency_key)
    .bind(request.fingerprint())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order) = inserted else {
        return Ok(None);
    };
    let lines: Vec<LineRow> = priced
        .lines
        .iter()
        .map(|l| LineRow {
            sku: l.sku.as_str().to_owned(),
            quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
            unit_price_minor: l.unit_price_minor,
        })
        .collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_minor).collect();
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor) \
         SELECT $1, l.n, l.sku, l.quantity, l.price FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS l(sku, quantity, price, n)",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .execute(&mut *conn)
    .await?;
    let placed = add_history(conn, order_id, "pending", "placed").await?;
    Ok(Some(FullOrder {
        order,
        lines,
        history: vec![placed],
    }))
}

#[shop_telemetry::db_span("SELECT", "orders")]
/// The order a customer placed under an idempotency key (keys are the customer's own).
pub async fn order_id_by_key(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
    key: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT order_id FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id.as_str())
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// The order row, locked for a status change.
#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn lock_order(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE"
    )))
    .bind(order_id)
    .fetch_optional(conn)
    .await
}

#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn load_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Option<FullOrder>> {
    let order: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order) = order else { return Ok(None) };
    let lines = order_lines(&mut *conn, order_id).await?;
    let history = sqlx::query_as(
        "SELECT status, reason, at FROM order_status_history WHERE order_id = $1 ORDER BY seq",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(Some(FullOrder {
        order,
        lines,
        history,
    }))
}

/// An order's lines, in the order they were placed.
#[shop_telemetry::db_span("SELECT", "order_lines")]
pub async fn order_lines(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<LineRow>> {
    sqlx::query_as("SELECT sku, quantity, unit_price_minor FROM order_lines WHERE order_id = $1 ORDER BY line_no")
        .bind(order_id)
        .fetch_all(conn)
        .await
}

/// A customer's order ids, newest first, strictly after the cursor `(created_at, order_id)`.
#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn order_ids_of_customer(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    let (at, id) = after.unzip();
    sqlx::query_scalar(
        "SELECT order_id FROM orders WHERE customer_id = $1 \
         AND ($2::timestamptz IS NULL OR (created_at, order_id) < ($2, $3)) \
         ORDER BY created_at DESC, order_id DESC LIMIT $4",
    )
    .bind(customer_id.as_str())
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[shop_telemetry::db_span("INSERT", "order_status_history")]
pub async fn add_history(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    reason: &str,
) -> sqlx::Result<HistoryRow> {
    sqlx::query_as(
        "INSERT INTO order_status_history (order_id, seq, status, reason) \
         SELECT $1, coalesce(max(seq), 0) + 1, $2, $3 FROM order_status_history WHERE order_id = $1 \
         RETURNING status, reason, at",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .fetch_one(conn)
    .await
}

/// Moves the order to `status` (with a cancellation reason when cancelled) and records why.
#[shop_telemetry::db_span("UPDATE", "orders")]
pub async fn set_status(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    cancellation_reason: Option<&str>,
    why: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE orders SET status = $2, cancellation_reason = $3, updated_at = clock_timestamp() WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .bind(cancellation_reason)
        .execute(&mut *conn)
        .await?;
    add_history(conn, order_id, status, why).await?;
    Ok(())
}

#[shop_telemetry::db_span("UPDATE", "orders")]
pub async fn mark_payment_requested(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE orders SET payment_requested = true, updated_at = clock_timestamp() WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
    add_history(
        conn,
        order_id,
        "pending",
        "stock reserved; payment requested",
    )
    .await?;
    Ok(())
}

/// Up to `limit` PENDING orders placed more than `deadline` ago, oldest first, locked for their
/// cancellation. Orders another replica's sweeper (or a saga step) holds are skipped, not
/// waited for: that one decides them.
#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn lock_overdue(
    conn: &mut PgConnection,
    deadline: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
         WHERE status = 'pending' AND created_at < clock_timestamp() - $1 * interval '1 millisecond' \
         ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    )))
    .bind(millis(deadline))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The PENDING orders: how many are older than `deadline`, and the age of the oldest (0 when
/// there is none).
#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn pending_ages(
    conn: &mut PgConnection,
    deadline: std::time::Duration,
) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at < clock_timestamp() - $1 * interval '1 millisecond'), \
                coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 \
         FROM orders WHERE status = 'pending'",
    )
    .bind(millis(deadline))
    .fetch_one(conn)
    .await
}

/// How many orders are PENDING (placed, neither confirmed nor cancelled yet), and how many of
/// those placed within `recent` have waited over `late`: one count over the partial index
/// `orders_pending_by_age`.
#[shop_telemetry::db_span("SELECT", "orders")]
pub async fn count_pending(
    conn: &mut PgConnection,
    late: std::time::Duration,
    recent: std::time::Duration,
) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER ( \
             WHERE created_at < clock_timestamp() - $1 * interval '1 millisecond' \
               AND created_at > clock_timestamp() - $2 * interval '1 millisecond') \
         FROM orders WHERE status = 'pending'",
    )
    .bind(millis(late))
    .bind(millis(recent))
    .fetch_one(conn)
    .await
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
