//! The notification service's business counters.

use prometheus_client::encoding::EncodeLabelSet;
use shop_eventing::count_on_commit;
use shop_telemetry::metrics::{Counter, Family, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// `shop_notifications_recorded_total{kind}`, `shop_notifications_delivered_total{channel}`,
/// `shop_notifications_failed_total{channel}`, `shop_notification_attempts_failed_total{channel}`.
#[derive(Clone, Debug, Default)]
pub struct NotificationMetrics {
    recorded: Family<KindLabels, Counter>,
    delivered: Family<ChannelLabels, Counter>,
    failed: Family<ChannelLabels, Counter>,
    attempts_failed: Family<ChannelLabels, Counter>,
}

impl NotificationMetrics {
    /// The counters, registered in `registry`, for a service delivering through `channel`.
    pub fn new(registry: &mut Registry, channel: &'static str) -> Self {
        let m = Self::default();
        registry.register(
            "shop_notifications_recorded",
            "Notifications recorded (one per order outcome), by kind",
            m.recorded.clone(),
        );
        registry.register(
            "shop_notifications_delivered",
            "Notifications delivered, by channel",
            m.delivered.clone(),
        );
        registry.register(
            "shop_notifications_failed",
            "Notifications given up on after their last attempt, by channel",
            m.failed.clone(),
        );
        registry.register(
            "shop_notification_attempts_failed",
            "Delivery attempts that failed (retried until the last), by channel",
            m.attempts_failed.clone(),
        );
        let labels = ChannelLabels { channel };
        let _ = m.delivered.get_or_create(&labels);
        let _ = m.failed.get_or_create(&labels);
        let _ = m.attempts_failed.get_or_create(&labels);
        m
    }

    /// A notification of `kind` was recorded (counted when the consumer's transaction commits).
    pub(crate) fn recorded(&self, kind: &'static str) {
        count_on_commit(&self.recorded.get_or_create(&KindLabels { kind }));
    }

    /// An attempt's outcome, once its record committed.
    pub(crate) fn attempt(&self, channel: &'static str, delivered: bool, last: bool) {
        let labels = ChannelLabels { channel };
        if delivered {
            self.delivered.get_or_create(&labels).inc();
        } else {
            self.attempts_failed.get_or_create(&labels).inc();
            if last {
                self.failed.get_or_create(&labels).inc();
            }
        }
    }
}
