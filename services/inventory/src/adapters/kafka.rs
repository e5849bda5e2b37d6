//! Which order event triggers which saga step.

use shop_eventing::{Handler, HandlerError, InboundEvent};
use shop_proto::order::v1 as order_pb;
use sqlx::PgConnection;

use crate::app::{self, Events};

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
        if event.is::<order_pb::OrderPlaced>() {
            let placed: order_pb::OrderPlaced = event.decode()?;
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
        } else if event.is::<order_pb::OrderConfirmed>() {
            let confirmed: order_pb::OrderConfirmed = event.decode()?;
            app::sell(tx, &confirmed.order_id).await?;
        } else if event.is::<order_pb::OrderCancelled>() {
            let cancelled: order_pb::OrderCancelled = event.decode()?;
            app::release(tx, &self.events, &cancelled.order_id).await?;
        } else if event.is::<order_pb::StockReleaseRequested>() {
            // A StockReserved reached the order after it was cancelled: release it the same way.
            let requested: order_pb::StockReleaseRequested = event.decode()?;
            app::release(tx, &self.events, &requested.order_id).await?;
        }
        // Other order events (PaymentRequested, RefundRequested) are not inventory's business.
        Ok(())
    }
}
