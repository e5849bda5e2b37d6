//! The order service's business counters. Each is counted when the transaction that decided
//! the outcome commits, so a retried or rolled-back step never counts twice.

use prometheus_client::encoding::EncodeLabelSet;
use shop_eventing::count_on_commit;
use shop_telemetry::metrics::{Counter, Family, Registry};

use crate::domain::CancellationReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `shop_orders_placed_total`, `shop_orders_confirmed_total`,
/// `shop_orders_cancelled_total{reason}`.
#[derive(Clone, Debug, Default)]
pub struct OrderMetrics {
    placed: Counter,
    confirmed: Counter,
    cancelled: Family<ReasonLabels, Counter>,
}

impl OrderMetrics {
    /// The counters, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("shop_orders_placed", "Orders placed", m.placed.clone());
        registry.register(
            "shop_orders_confirmed",
            "Orders confirmed (stock reserved and payment captured)",
            m.confirmed.clone(),
        );
        registry.register(
            "shop_orders_cancelled",
            "Orders cancelled, by reason (out_of_stock, payment_declined, customer_cancelled)",
            m.cancelled.clone(),
        );
        // Every reason shows from the start (at 0), so rates and alerts need no absent() guard.
        for reason in [
            CancellationReason::OutOfStock,
            CancellationReason::PaymentDeclined,
            CancellationReason::CustomerCancelled,
        ] {
            let _ = m.cancelled.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        m
    }

    pub(crate) fn placed(&self) {
        count_on_commit(&self.placed);
    }

    pub(crate) fn confirmed(&self) {
        count_on_commit(&self.confirmed);
    }

    pub(crate) fn cancelled(&self, reason: CancellationReason) {
        count_on_commit(&self.cancelled.get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        }));
    }
}
