//! The client of inventory's catalog, used to price orders. Every call has a deadline, and a
//! circuit breaker stops calling a failing inventory for a while, so PlaceOrder answers
//! UNAVAILABLE promptly instead of piling up calls on a service that is down or slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::inventory::v1::ListProductsRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_telemetry::grpc::{GrpcClientLayer, GrpcMetrics, Observed};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The catalog cannot be read now; retry after the given delay.
#[derive(Debug, thiserror::Error)]
#[error("inventory unavailable: {reason}")]
pub struct CatalogUnavailable {
    pub reason: String,
    pub retry_after: Duration,
}

/// Prices by sku: (unit price in minor units, currency).
pub type Prices = HashMap<String, (i64, String)>;

/// Inventory's catalog over gRPC.
#[derive(Clone, Debug)]
pub struct InventoryCatalog {
    client: InventoryServiceClient<Observed<Channel>>,
    deadline: Duration,
    breaker: Arc<Breaker>,
}

impl InventoryCatalog {
    /// A catalog client for `url` (e.g. `http://inventory:50052`). Connects lazily: the order
    /// service starts even when inventory is not up yet. Calls get a client span (whose context inventory continues) and are counted in `metrics`.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(
        url: &str,
        deadline: Duration,
        breaker: BreakerSettings,
        metrics: GrpcMetrics,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(deadline)
            .connect_lazy();
        let channel = tower_layer::Layer::layer(&GrpcClientLayer::new(metrics), channel);
        Ok(Self {
            client: InventoryServiceClient::new(channel),
            deadline,
            breaker: Arc::new(Breaker::new(breaker)),
        })
    }

    /// Current prices of `skus`; skus the catalog does not know are absent.
    ///
    /// # Errors
    /// When inventory is down, slow past the deadline, or the breaker is open.
    pub async fn prices(&self, skus: &[String]) -> Result<Prices, CatalogUnavailable> {
        self.breaker.admit()?;
        let mut request = tonic::Request::new(ListProductsRequest {
            skus: skus.to_vec(),
            page_size: u32::try_from(skus.len()).unwrap_or(500).clamp(1, 500),
            page_token: String::new(),
        });
        request.set_timeout(self.deadline);
        let mut client = self.client.clone();
        let outcome = tokio::time::timeout(self.deadline, client.list_products(request)).await;
        let failure = match outcome {
            Ok(Ok(response)) => {
                self.breaker.success();
                return Ok(response
                    .into_inner()
                    .products
                    .into_iter()
                    .filter_map(|p| p.unit_price.map(|m| (p.sku, (m.amount_minor, m.currency))))
                    .collect());
            }
            Ok(Err(status)) if matches!(status.code(), Code::InvalidArgument | Code::NotFound) => {
                // Inventory answered; the question was wrong. Not an availability problem.
                self.breaker.success();
                format!("catalog refused the lookup: {}", status.message())
            }
            Ok(Err(status)) => {
                self.breaker.failure();
                format!("{:?}: {}", status.code(), status.message())
            }
            Err(_) => {
                self.breaker.failure();
                format!("no answer within {:?}", self.deadline)
            }
        };
        Err(CatalogUnavailable {
            reason: failure,
            retry_after: self.breaker.retry_after(),
        })
    }
}

/// When the breaker opens and for how long.
#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one trial call through.
    pub open_for: Duration,
}

#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses at once while open; once the open period is over, lets calls through again (the
    /// first failure re-opens it, since the failure count is still at the threshold).
    fn admit(&self) -> Result<(), CatalogUnavailable> {
        let state = self.lock();
        match state.open_until {
            Some(until) if Instant::now() < until => Err(CatalogUnavailable {
                reason: "circuit breaker open after repeated inventory failures".into(),
                retry_after: until - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    fn success(&self) {
        *self.lock() = BreakerState::default();
    }

    fn failure(&self) {
        let mut state = self.lock();
        state.consecutive_failures += 1;
        if state.consecutive_failures >= self.settings.failure_threshold {
            state.open_until = Some(Instant::now() + self.settings.open_for);
        }
    }

    fn retry_after(&self) -> Duration {
        self.lock()
            .open_until
            .map_or(Duration::from_secs(1), |until| {
                until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_after_a_success() {
        let breaker = Breaker::new(BreakerSettings {
            failure_threshold: 2,
            open_for: Duration::from_millis(50),
        });
        breaker.failure();
        assert!(breaker.admit().is_ok(), "one failure is not enough");
        breaker.failure();
        let refused = breaker.admit().unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            breaker.admit().is_ok(),
            "a trial call goes through after the open period"
        );
        breaker.failure();
        assert!(breaker.admit().is_err(), "a failed trial re-opens it");
        std::thread::sleep(Duration::from_millis(60));
        breaker.success();
        breaker.failure();
        assert!(breaker.admit().is_ok(), "a success resets the count");
    }
}
