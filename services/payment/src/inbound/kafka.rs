//! Which order event triggers which saga step.

use shop_eventing::{Handler, HandlerError, InboundEvent, LockKey};
use shop_proto::order::v1 as order_pb;
use sqlx::PgConnection;

use crate::app::{self, Events, StepError};

/// The lock of one customer's account row, shared by every consumer of this database.
fn account_lock(customer_id: &str) -> LockKey {
    LockKey::new("payment.accounts", customer_id)
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
        if let Some(requested) = event.decode_if::<order_pb::PaymentRequested>()? {
            if requested.order_id.is_empty()
                || requested
                    .amount
                    .as_ref()
                    .is_none_or(|m| m.amount_minor <= 0)
            {
                return Err(HandlerError::permanent(anyhow::anyhow!(
                    "PaymentRequested {} violates the contract: it needs an order id and a positive amount",
                    requested.order_id
                )));
            }
            app::capture(tx, &self.events, &requested).await?;
        } else if let Some(cancelled) = event.decode_if::<order_pb::OrderCancelled>()? {
            refund(self, tx, &cancelled.order_id, &cancelled.customer_id).await?;
        } else if let Some(requested) = event.decode_if::<order_pb::RefundRequested>()? {
            // A PaymentCaptured reached the order after it was cancelled: refund it the same way.
            refund(self, tx, &requested.order_id, &requested.customer_id).await?;
        }
        // Other order events (OrderPlaced, OrderConfirmed, StockReleaseRequested) are not
        // payment's business.
        Ok(())
    }

    /// The account a saga step locks: the customer's for a capture, the account the payment
    /// was taken from for a refund. The consumer takes them for its whole batch, in one order,
    /// before applying it: two replicas' batches never lock two accounts in opposite orders.
    async fn lock_keys(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<Vec<LockKey>, HandlerError> {
        if let Some(requested) = event.decode_if::<order_pb::PaymentRequested>()? {
            Ok(vec![account_lock(&requested.customer_id)])
        } else {
            // Both refund what was captured, into the account it was taken from.
            let order_id = match event.decode_if::<order_pb::OrderCancelled>()? {
                Some(cancelled) => Some(cancelled.order_id),
                None => event
                    .decode_if::<order_pb::RefundRequested>()?
                    .map(|requested| requested.order_id),
            };
            let Some(order_id) = order_id else {
                return Ok(Vec::new());
            };
            Ok(app::payer(tx, &order_id)
                .await?
                .map(|customer_id| account_lock(&customer_id))
                .into_iter()
                .collect())
        }
    }

    /// The saga steps payment takes part in; the topic's other events leave no inbox row.
    fn handles(&self, event: &InboundEvent) -> bool {
        event.is::<order_pb::PaymentRequested>()
            || event.is::<order_pb::OrderCancelled>()
            || event.is::<order_pb::RefundRequested>()
    }
}

async fn refund(
    handler: &OrderEvents,
    tx: &mut PgConnection,
    order_id: &str,
    customer_id: &str,
) -> Result<(), HandlerError> {
    app::refund(tx, &handler.events, order_id, customer_id)
        .await
        .map_err(|e| match e {
            StepError::Database(db) => HandlerError::from(db),
            impossible @ StepError::Impossible(_) => HandlerError::permanent(impossible),
        })
}
