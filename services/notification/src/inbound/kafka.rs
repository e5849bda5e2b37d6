//! Which order event causes which notification.

use shop_eventing::{Handler, HandlerError, InboundEvent};
use shop_proto::order::v1 as order_pb;
use sqlx::PgConnection;

use crate::app;
use crate::domain::{CustomerId, NewNotification};

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
        let notification = if let Some(confirmed) = event.decode_if::<order_pb::OrderConfirmed>()? {
            let customer_id = parse_ids(
                "OrderConfirmed",
                &confirmed.order_id,
                &confirmed.customer_id,
            )?;
            NewNotification::order_confirmed(
                &confirmed.order_id,
                customer_id,
                confirmed
                    .total
                    .as_ref()
                    .map(|m| (m.amount_minor, m.currency.as_str())),
            )
        } else if let Some(cancelled) = event.decode_if::<order_pb::OrderCancelled>()? {
            let customer_id = parse_ids(
                "OrderCancelled",
                &cancelled.order_id,
                &cancelled.customer_id,
            )?;
            NewNotification::order_cancelled(
                &cancelled.order_id,
                customer_id,
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

/// A notification needs to know whose order it is about: an order id and a customer id, which
/// the order service parsed at its edge by the rule every service shares, so one that does not
/// parse here violates the contract just as a missing one does.
fn parse_ids(event: &str, order_id: &str, customer_id: &str) -> Result<CustomerId, HandlerError> {
    if order_id.is_empty() || customer_id.is_empty() {
        return Err(HandlerError::permanent(anyhow::anyhow!(
            "{event} {order_id:?} violates the contract: it needs an order id and a customer id"
        )));
    }
    CustomerId::parse(customer_id).map_err(|e| {
        HandlerError::permanent(anyhow::anyhow!(
            "{event} {order_id:?} violates the contract: its customer id {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_needs_an_order_id_and_a_customer_id_that_parses() {
        assert_eq!(
            parse_ids("OrderConfirmed", "o-1", "alice").unwrap(),
            CustomerId::parse("alice").unwrap()
        );
        for (order_id, customer_id) in [("", "alice"), ("o-1", ""), ("o-1", "a b")] {
            assert!(
                parse_ids("OrderConfirmed", order_id, customer_id).is_err(),
                "{order_id:?} {customer_id:?}"
            );
        }
    }
}
