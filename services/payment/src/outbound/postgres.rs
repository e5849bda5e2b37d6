//! Payment's SQL. Functions take a connection so callers decide the transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{Account, AccountStatus, Payment, PaymentStatus};

/// An account row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AccountRow {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    pub status: String,
    pub opened_at: DateTime<Utc>,
}

/// A deposit row, as far as a retry is compared with it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DepositRow {
    pub customer_id: String,
    pub amount_minor: i64,
}

/// A payment row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PaymentRow {
    pub order_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub decline_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Self {
            status: AccountStatus::parse(&row.status),
            customer_id: row.customer_id,
            currency: row.currency,
            balance_minor: row.balance_minor,
            opened_at: row.opened_at,
        }
    }
}

impl From<PaymentRow> for Payment {
    fn from(row: PaymentRow) -> Self {
        Self {
            status: PaymentStatus::parse(&row.status),
            order_id: row.order_id,
            customer_id: row.customer_id,
            amount_minor: row.amount_minor,
            currency: row.currency,
            decline_reason: row.decline_reason,
            updated_at: row.updated_at,
        }
    }
}

/// A payment to record.
#[derive(Clone, Debug)]
pub struct NewPayment<'a> {
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub decline_reason: Option<&'a str>,
}

impl<'a> NewPayment<'a> {
    /// The tombstone of an order cancelled before any payment: no money, status `cancelled`.
    pub fn tombstone(order_id: &'a str, customer_id: &'a str) -> Self {
        Self {
            order_id,
            customer_id,
            amount_minor: 0,
            currency: "",
            status: "cancelled",
            decline_reason: None,
        }
    }
}

/// Opens an account with a zero balance; `None` if the customer already has one.
#[shop_telemetry::db_span("INSERT", "accounts")]
pub async fn insert_account(
    conn: &mut PgConnection,
    customer_id: &str,
    currency: &str,
    status: &str,
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as(
        "INSERT INTO accounts (customer_id, currency, status) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING \
         RETURNING customer_id, currency, balance_minor, status, opened_at",
    )
    .bind(customer_id)
    .bind(currency)
    .bind(status)
    .fetch_optional(conn)
    .await
}

/// The account, locked for update when `lock`.
#[shop_telemetry::db_span("SELECT", "accounts")]
pub async fn account(
    conn: &mut PgConnection,
    customer_id: &str,
    lock: bool,
) -> sqlx::Result<Option<AccountRow>> {
    let sql = if lock {
        "SELECT customer_id, currency, balance_minor, status, opened_at FROM accounts WHERE customer_id = $1 FOR UPDATE"
    } else {
        "SELECT customer_id, currency, balance_minor, status, opened_at FROM accounts WHERE customer_id = $1"
    };
    sqlx::query_as(sql)
        .bind(customer_id)
        .fetch_optional(conn)
        .await
}

/// Adds `delta` (negative for a debit) to the balance. The balance's CHECK refuses to go below
/// zero, so a debit the caller did not check fails rather than overdraws.
#[shop_telemetry::db_span("UPDATE", "accounts")]
pub async fn add_to_balance(
    conn: &mut PgConnection,
    customer_id: &str,
    delta: i64,
) -> sqlx::Result<AccountRow> {
    sqlx::query_as(
        "UPDATE accounts SET balance_minor = balance_minor + $2 WHERE customer_id = $1 \
         RETURNING customer_id, currency, balance_minor, status, opened_at",
    )
    .bind(customer_id)
    .bind(delta)
    .fetch_one(conn)
    .await
}

/// Records a deposit; `false` if `deposit_id` is already taken (by this request's first try or
/// by another request). Waits for a concurrent insert of the same id to commit or roll back.
#[shop_telemetry::db_span("INSERT", "deposits")]
pub async fn insert_deposit(
    conn: &mut PgConnection,
    deposit_id: &str,
    customer_id: &str,
    amount_minor: i64,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO deposits (deposit_id, customer_id, amount_minor) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(deposit_id)
    .bind(customer_id)
    .bind(amount_minor)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

#[shop_telemetry::db_span("SELECT", "deposits")]
pub async fn deposit(
    conn: &mut PgConnection,
    deposit_id: &str,
) -> sqlx::Result<Option<DepositRow>> {
    sqlx::query_as("SELECT customer_id, amount_minor FROM deposits WHERE deposit_id = $1")
        .bind(deposit_id)
        .fetch_optional(conn)
        .await
}

/// The payment of an order, locked for update when `lock`.
#[shop_telemetry::db_span("SELECT", "payments")]
pub async fn payment(
    conn: &mut PgConnection,
    order_id: &str,
    lock: bool,
) -> sqlx::Result<Option<PaymentRow>> {
    let sql = if lock {
        "SELECT order_id, customer_id, amount_minor, currency, status, decline_reason, updated_at \
         FROM payments WHERE order_id = $1 FOR UPDATE"
    } else {
        "SELECT order_id, customer_id, amount_minor, currency, status, decline_reason, updated_at \
         FROM payments WHERE order_id = $1"
    };
    sqlx::query_as(sql)
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// Records an order's payment; `false` if the order already has one. Waits for a concurrent
/// insert for the same order to commit or roll back.
#[shop_telemetry::db_span("INSERT", "payments")]
pub async fn insert_payment(
    conn: &mut PgConnection,
    payment: &NewPayment<'_>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_minor, currency, status, decline_reason) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(payment.order_id)
    .bind(payment.customer_id)
    .bind(payment.amount_minor)
    .bind(payment.currency)
    .bind(payment.status)
    .bind(payment.decline_reason)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

#[shop_telemetry::db_span("UPDATE", "payments")]
pub async fn set_payment_status(
    conn: &mut PgConnection,
    order_id: &str,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}
