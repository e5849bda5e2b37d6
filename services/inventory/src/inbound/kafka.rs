//! Which order event triggers which saga step.

use shop_eventing::{Handler, HandlerError, InboundEvent, LockKey};
use shop_proto::order::v1 as order_pb;
use sqlx::PgConnection;

use crate::app::{self, Events};

/// The lock of one product's stock row, shared by every consumer of this database.
fn stock_lock(sku: &str) -> LockKey {
    LockKey::new("inventory.products", sku)
}

/// Consumes `order.events.v1`.
#[derive(Clone, Debug)]
pub struct OrderEvents {
    pub events: Events,
}

impl Handler for OrderEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if let Some(placed) = event.decode_if::<order_pb::OrderPlaced>()? {
            if placed.order_id.is_empty()
                || placed.lines.is_empty()
                || placed.lines.iter().any(|l| l.quantity == 0)
            {
                return Err(HandlerError::permanent(anyhow::anyhow!(
                    "OrderPlaced {} violates the contract: it needs an order id and lines with positive quantities",
                    placed.order_id
                )));
            }
            app::reserve(tx, &self.events, &placed).await?;
        } else if let Some(confirmed) = event.decode_if::<order_pb::OrderConfirmed>()? {
            app::sell(tx, &confirmed.order_id).await?;
        } else if let Some(cancelled) = event.decode_if::<order_pb::OrderCancelled>()? {
            app::release(tx, &self.events, &cancelled.order_id).await?;
        } else if let Some(requested) = event.decode_if::<order_pb::StockReleaseRequested>()? {
            // A StockReserved reached the order after it was cancelled: release it the same way.
            app::release(tx, &self.events, &requested.order_id).await?;
        }
        // Other order events (PaymentRequested, RefundRequested) are not inventory's business.
        Ok(())
    }

    /// The stock rows a saga step locks: the products of the order's lines (reserving), or of
    /// its reservation (selling, releasing, a late release). The consumer takes them for its whole batch, in
    /// one order, before applying it: two replicas' batches never lock two products in
    /// opposite orders.
    async fn lock_keys(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<Vec<LockKey>, HandlerError> {
        let skus = if let Some(placed) = event.decode_if::<order_pb::OrderPlaced>()? {
            placed.lines.into_iter().map(|l| l.sku).collect()
        } else if let Some(confirmed) = event.decode_if::<order_pb::OrderConfirmed>()? {
            app::reserved_skus(tx, &confirmed.order_id).await?
        } else if let Some(cancelled) = event.decode_if::<order_pb::OrderCancelled>()? {
            app::reserved_skus(tx, &cancelled.order_id).await?
        } else if let Some(requested) = event.decode_if::<order_pb::StockReleaseRequested>()? {
            app::reserved_skus(tx, &requested.order_id).await?
        } else {
            Vec::new()
        };
        Ok(skus.iter().map(|sku| stock_lock(sku)).collect())
    }

    /// The saga steps inventory takes part in; the topic's other events leave no inbox row.
    fn handles(&self, event: &InboundEvent) -> bool {
        event.is::<order_pb::OrderPlaced>()
            || event.is::<order_pb::OrderConfirmed>()
            || event.is::<order_pb::OrderCancelled>()
            || event.is::<order_pb::StockReleaseRequested>()
    }
}
