//! Which order event causes which notification.

use shop_eventing::{Handler, HandlerError, InboundEvent};
use shop_proto::order::v1 as order_pb;
use sqlx::PgConnection;

use crate::app;
use crate::domain::NewNotification;

/// Consumes `order.events.v1`.
#[derive(Clone, Debug)]
pub struct OrderEvents {
    /// The name of the channel notifications will go through, stored on each.
    pub channel: &'static str,
    pub metrics: crate::metrics::NotificationMetrics,
}

impl Handler for OrderEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        let notification = if event.is::<order_pb::OrderConfirmed>() {
            let confirmed: order_pb::OrderConfirmed = event.decode()?;
            check_ids(
                "OrderConfirmed",
                &confirmed.order_id,
                &confirmed.customer_id,
            )?;
            NewNotification::order_confirmed(
                &confirmed.order_id,
                &confirmed.customer_id,
                confirmed
                    .total
                    .as_ref()
                    .map(|m| (m.amount_minor, m.currency.as_str())),
            )
        } else if event.is::<order_pb::OrderCancelled>() {
            let cancelled: order_pb::OrderCancelled = event.decode()?;
            check_ids(
                "OrderCancelled",
                &cancelled.order_id,
                &cancelled.customer_id,
            )?;
            NewNotification::order_cancelled(
                &cancelled.order_id,
                &cancelled.customer_id,
                cancelled.reason(),
                &cancelled.detail,
                cancelled.was_confirmed,
            )
        } else {
            // Other order events (OrderPlaced, PaymentRequested) are not told to the customer.
            return Ok(());
        };
        app::record(tx, self.channel, &self.metrics, &notification).await?;
        Ok(())
    }

    /// The outcomes told to the customer; the topic's other events leave no inbox row.
    fn handles(&self, event: &InboundEvent) -> bool {
        event.is::<order_pb::OrderConfirmed>() || event.is::<order_pb::OrderCancelled>()
    }
}

/// A notification needs to know whose order it is about.
fn check_ids(event: &str, order_id: &str, customer_id: &str) -> Result<(), HandlerError> {
    if order_id.is_empty() || customer_id.is_empty() {
        return Err(HandlerError::permanent(anyhow::anyhow!(
            "{event} {order_id:?} violates the contract: it needs an order id and a customer id"
        )));
    }
    Ok(())
}
