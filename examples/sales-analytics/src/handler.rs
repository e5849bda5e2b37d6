//! Everything this subscriber adds to the SDK: which order events change the sales figures, and
//! how. Decoding, deduplication, retries, dead letters, tracing and metrics are the SDK's.

use shop_eventing::{Dispatcher, HandlerError, InboundEvent, On};
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed};
use sqlx::PgConnection;

/// Revenue and units per sku: the lines of confirmed orders, less the orders cancelled after
/// their confirmation (`OrderCancelled.was_confirmed`: the stock came back and the payment was
/// refunded, so the sale is taken back). Orders cancelled before confirmation never sold.
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesAnalytics;

/// The consumer's handler: the two order events that matter, every other one skipped.
pub fn handler() -> Dispatcher<SalesAnalytics> {
    Dispatcher::new(SalesAnalytics)
        .on::<OrderConfirmed>()
        .on::<OrderCancelled>()
}

impl On<OrderConfirmed> for SalesAnalytics {
    async fn on(
        &self,
        tx: &mut PgConnection,
        event: OrderConfirmed,
        meta: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if event.order_id.is_empty() {
            return Err(contract("an OrderConfirmed without an order id"));
        }
        for (line_no, line) in (0_i32..).zip(&event.lines) {
            let Some(price) = &line.unit_price else {
                return Err(contract("an order line without a unit price"));
            };
            let quantity = i64::from(line.quantity);
            sqlx::query(
                "INSERT INTO sales_lines \
                 (order_id, line_no, sku, currency, quantity, revenue_minor, confirmed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz) ON CONFLICT DO NOTHING",
            )
            .bind(&event.order_id)
            .bind(line_no)
            .bind(&line.sku)
            .bind(&price.currency)
            .bind(quantity)
            .bind(price.amount_minor.saturating_mul(quantity))
            .bind(meta.time.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

impl On<OrderCancelled> for SalesAnalytics {
    async fn on(
        &self,
        tx: &mut PgConnection,
        event: OrderCancelled,
        meta: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if !event.was_confirmed {
            return Ok(()); // out of stock, declined: nothing was sold
        }
        sqlx::query(
            "INSERT INTO cancelled_orders (order_id, cancelled_at) \
             VALUES ($1, $2::timestamptz) ON CONFLICT DO NOTHING",
        )
        .bind(&event.order_id)
        .bind(meta.time.as_deref())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// An event that breaks the contract: retrying cannot help, so it goes to the dead-letter topic.
fn contract(what: &str) -> HandlerError {
    HandlerError::permanent(anyhow::anyhow!("contract violation: {what}"))
}
