//! The order service's business counters and saga gauges. Each counter is counted when the
//! transaction that decided the outcome commits, so a retried or rolled-back step never counts
//! twice.

use prometheus_client::encoding::EncodeLabelSet;
use shop_eventing::count_on_commit;
use shop_telemetry::metrics::{Counter, Family, FloatGauge, Gauge, Registry};

use crate::domain::CancellationReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompensationLabels {
    compensation: &'static str,
}

/// A compensation the order service asks for when a reply reaches an order it already
/// cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateCompensation {
    /// `RefundRequested`, for a late `PaymentCaptured`.
    Refund,
    /// `StockReleaseRequested`, for a late `StockReserved`.
    Release,
}

impl LateCompensation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Release => "release",
        }
    }
}

/// `shop_orders_placed_total`, `shop_orders_confirmed_total`,
/// `shop_orders_cancelled_total{reason}`, `shop_orders_late_compensations_total{compensation}`,
/// and the gauges of the saga deadline, `shop_orders_pending_oldest_age_seconds` and
/// `shop_orders_pending_overdue`.
#[derive(Clone, Debug, Default)]
pub struct OrderMetrics {
    placed: Counter,
    confirmed: Counter,
    cancelled: Family<ReasonLabels, Counter>,
    late_compensations: Family<CompensationLabels, Counter>,
    pending_oldest_age: FloatGauge,
    pending_overdue: Gauge,
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
            "Orders cancelled, by reason (out_of_stock, payment_declined, customer_cancelled, timeout)",
            m.cancelled.clone(),
        );
        registry.register(
            "shop_orders_late_compensations",
            "Replies that reached an order already cancelled, and the compensation asked for them (refund, release)",
            m.late_compensations.clone(),
        );
        registry.register(
            "shop_orders_pending_oldest_age_seconds",
            "Age of the oldest PENDING order, as the deadline sweeper last saw it (0 when none)",
            m.pending_oldest_age.clone(),
        );
        registry.register(
            "shop_orders_pending_overdue",
            "PENDING orders older than the saga deadline that the sweeper's last round left (it cancels them; more than 0 means it cannot)",
            m.pending_overdue.clone(),
        );
        // Every label shows from the start (at 0), so rates and alerts need no absent() guard.
        for reason in CancellationReason::ALL {
            let _ = m.cancelled.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for compensation in [LateCompensation::Refund, LateCompensation::Release] {
            let _ = m.late_compensations.get_or_create(&CompensationLabels {
                compensation: compensation.as_str(),
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

    pub(crate) fn late_compensation(&self, compensation: LateCompensation) {
        count_on_commit(&self.late_compensations.get_or_create(&CompensationLabels {
            compensation: compensation.as_str(),
        }));
    }

    /// What the sweeper saw after its round: the oldest PENDING order's age, and how many
    /// PENDING orders are past the deadline still.
    pub(crate) fn pending(&self, oldest_age_seconds: f64, overdue: i64) {
        self.pending_oldest_age.set(oldest_age_seconds);
        self.pending_overdue.set(overdue);
    }
}
