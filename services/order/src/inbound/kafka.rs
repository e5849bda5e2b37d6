//! Which reply from inventory or payment advances which order.

use shop_eventing::{Handler, HandlerError, InboundEvent};
use shop_proto::inventory::v1 as inventory_pb;
use shop_proto::payment::v1 as payment_pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::{self, Events, SagaReply};

/// Consumes `inventory.events.v1` and `payment.events.v1`.
#[derive(Clone, Debug)]
pub struct SagaReplies {
    pub events: Events,
}

fn order_id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|_| HandlerError::permanent(anyhow::anyhow!("order id {raw:?} is not a UUID")))
}

impl Handler for SagaReplies {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        let (id, reply) = if let Some(e) = event.decode_if::<inventory_pb::StockReserved>()? {
            (order_id(&e.order_id)?, SagaReply::StockReserved)
        } else if let Some(e) = event.decode_if::<inventory_pb::StockRejected>()? {
            let detail = e
                .lines
                .iter()
                .map(|l| {
                    format!(
                        "{} ({:?}: {} requested, {} available)",
                        l.sku,
                        l.reason(),
                        l.requested,
                        l.available
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            (order_id(&e.order_id)?, SagaReply::StockRejected { detail })
        } else if let Some(e) = event.decode_if::<payment_pb::PaymentCaptured>()? {
            (order_id(&e.order_id)?, SagaReply::PaymentCaptured)
        } else if let Some(e) = event.decode_if::<payment_pb::PaymentDeclined>()? {
            (
                order_id(&e.order_id)?,
                SagaReply::PaymentDeclined {
                    detail: format!("{:?}", e.reason()),
                },
            )
        } else {
            // StockReleased, PaymentRefunded: compensations done; nothing for the order to do.
            return Ok(());
        };
        app::on_reply(tx, &self.events, id, reply)
            .await
            .map_err(|e| match e.downcast::<sqlx::Error>() {
                Ok(db) => HandlerError::from(db),
                Err(other) => HandlerError::permanent(other),
            })
    }

    /// The replies the saga waits for (StockReleased and PaymentRefunded end compensations: nothing to do, no inbox row).
    fn handles(&self, event: &InboundEvent) -> bool {
        event.is::<inventory_pb::StockReserved>()
            || event.is::<inventory_pb::StockRejected>()
            || event.is::<payment_pb::PaymentCaptured>()
            || event.is::<payment_pb::PaymentDeclined>()
    }
}
