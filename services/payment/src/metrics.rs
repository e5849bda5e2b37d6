//! The payment service's business counters, counted when the deciding transaction commits.

use prometheus_client::encoding::EncodeLabelSet;
use shop_eventing::count_on_commit;
use shop_telemetry::metrics::{Counter, Family, Registry};

use crate::domain::DeclineReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `shop_payments_captured_total`, `shop_payments_declined_total{reason}`,
/// `shop_payments_refunded_total`, `shop_payments_late_requests_total`.
#[derive(Clone, Debug, Default)]
pub struct PaymentMetrics {
    captured: Counter,
    declined: Family<ReasonLabels, Counter>,
    refunded: Counter,
    late_requests: Counter,
}

impl PaymentMetrics {
    /// The counters, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shop_payments_captured",
            "Payments captured (an order's total debited from its customer's account)",
            m.captured.clone(),
        );
        registry.register(
            "shop_payments_declined",
            "Payments declined, by reason",
            m.declined.clone(),
        );
        registry.register(
            "shop_payments_refunded",
            "Captured payments refunded after the order was cancelled",
            m.refunded.clone(),
        );
        registry.register(
            "shop_payments_late_requests",
            "PaymentRequested refused because its order was cancelled before (a re-driven dead letter, a replay): no money taken",
            m.late_requests.clone(),
        );
        for reason in [
            DeclineReason::UnknownAccount,
            DeclineReason::AccountFrozen,
            DeclineReason::CurrencyMismatch,
            DeclineReason::InsufficientFunds,
        ] {
            let _ = m.declined.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        m
    }

    pub(crate) fn captured(&self) {
        count_on_commit(&self.captured);
    }

    pub(crate) fn declined(&self, reason: DeclineReason) {
        count_on_commit(&self.declined.get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        }));
    }

    pub(crate) fn refunded(&self) {
        count_on_commit(&self.refunded);
    }

    pub(crate) fn late_request(&self) {
        count_on_commit(&self.late_requests);
    }
}
