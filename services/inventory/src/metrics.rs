//! The inventory service's business counters, counted when the deciding transaction commits.

use shop_eventing::count_on_commit;
use shop_telemetry::metrics::{Counter, Registry};

/// `shop_stock_reservations_total`, `shop_stock_rejections_total`,
/// `shop_stock_releases_total`, `shop_stock_late_requests_total`.
#[derive(Clone, Debug, Default)]
pub struct InventoryMetrics {
    reserved: Counter,
    rejected: Counter,
    released: Counter,
    late_requests: Counter,
}

impl InventoryMetrics {
    /// The counters, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shop_stock_reservations",
            "Orders whose every line was reserved",
            m.reserved.clone(),
        );
        registry.register(
            "shop_stock_rejections",
            "Orders rejected because a line was short or unknown (nothing reserved)",
            m.rejected.clone(),
        );
        registry.register(
            "shop_stock_releases",
            "Reservations released, or sold units taken back, after a cancellation",
            m.released.clone(),
        );
        registry.register(
            "shop_stock_late_requests",
            "OrderPlaced refused because its order was cancelled before (a re-driven dead letter, a replay): nothing reserved",
            m.late_requests.clone(),
        );
        m
    }

    pub(crate) fn reserved(&self) {
        count_on_commit(&self.reserved);
    }

    pub(crate) fn rejected(&self) {
        count_on_commit(&self.rejected);
    }

    pub(crate) fn released(&self) {
        count_on_commit(&self.released);
    }

    pub(crate) fn late_request(&self) {
        count_on_commit(&self.late_requests);
    }
}
