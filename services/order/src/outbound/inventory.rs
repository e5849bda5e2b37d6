//! The client of inventory's catalog, used to price orders. Every call has a deadline, and a
//! circuit breaker stops calling a failing inventory for a while, so PlaceOrder answers
//! UNAVAILABLE promptly instead of piling up calls on a service that is down or slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::inventory::v1::ListProductsRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_runtime::auth::BearerInterceptor;
use shop_telemetry::grpc::{GrpcClientLayer, GrpcMetrics, Observed};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::domain::Sku;

/// The catalog cannot be read now; retry after the given delay.
#[derive(Debug, thiserror::Error)]
#[error("inventory unavailable: {reason}")]
pub struct CatalogUnavailable {
    pub reason: String,
    pub retry_after: Duration,
}

/// Prices by sku, as inventory names them: (unit price in minor units, currency).
pub type Prices = HashMap<String, (i64, String)>;

/// Inventory's catalog over gRPC.
#[derive(Clone, Debug)]
pub struct InventoryCatalog {
    client: InventoryServiceClient<Observed<InterceptedService<Channel, BearerInterceptor>>>,
    deadline: Duration,
    breaker: Arc<Breaker>,
}

impl InventoryCatalog {
    /// A catalog client for `url` (e.g. `http://inventory:50052`). Connects lazily: the order
    /// service starts even when inventory is not up yet. Calls get a client span (whose context
    /// inventory continues), are counted in `metrics` and carry the order service's own token
    /// (`token`).
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(
        url: &str,
        deadline: Duration,
        breaker: BreakerSettings,
        metrics: GrpcMetrics,
        token: BearerInterceptor,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(deadline)
            .connect_lazy();
        let channel = InterceptedService::new(channel, token);
        let channel =
            tower_layer::Layer::layer(&GrpcClientLayer::new(metrics).with_target(url), channel);
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
    pub async fn prices(&self, skus: &[Sku]) -> Result<Prices, CatalogUnavailable> {
        let admission = self.breaker.admit()?;
        let mut request = tonic::Request::new(ListProductsRequest {
            skus: skus.iter().map(ToString::to_string).collect(),
            page_size: u32::try_from(skus.len()).unwrap_or(500).clamp(1, 500),
            page_token: String::new(),
        });
        request.set_timeout(self.deadline);
        let mut client = self.client.clone();
        let outcome = tokio::time::timeout(self.deadline, client.list_products(request)).await;
        let failure = match outcome {
            Ok(Ok(response)) => {
                admission.success();
                return Ok(response
                    .into_inner()
                    .products
                    .into_iter()
                    .filter_map(|p| p.unit_price.map(|m| (p.sku, (m.amount_minor, m.currency))))
                    .collect());
            }
            Ok(Err(status)) if matches!(status.code(), Code::InvalidArgument | Code::NotFound) => {
                // Inventory answered; the question was wrong. Not an availability problem.
                admission.success();
                format!("catalog refused the lookup: {}", status.message())
            }
            Ok(Err(status)) => {
                admission.failure();
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) {
                    // Not the customer's doing: this service's own token is missing its renewal
                    // or lacks the rights. Loud, as no retry by the customer can fix it.
                    tracing::error!(code = ?status.code(), "Inventory refused the order service's own token (ORDER_SERVICE_TOKEN_FILE).");
                }
                format!("{:?}: {}", status.code(), status.message())
            }
            Err(_) => {
                admission.failure();
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

/// Closed (calls go through), open (refused until `open_until`), then half-open: exactly one
/// trial call goes through, and every other call is refused while it is in flight. Its success
/// closes the breaker; its failure opens it again. Without the single trial, every call waiting
/// at the end of the open period would hit a recovering inventory at once.
#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// A half-open trial call is in flight.
    trial_in_flight: bool,
}

/// A call the breaker let through; report how it went with [`Admission::success`] or
/// [`Admission::failure`]. A trial call dropped without either (its caller went away) frees the
/// half-open state for the next caller.
#[must_use]
#[derive(Debug)]
struct Admission<'a> {
    breaker: &'a Breaker,
    trial: bool,
}

impl Admission<'_> {
    fn success(mut self) {
        self.trial = false;
        *self.breaker.lock() = BreakerState::default();
    }

    fn failure(mut self) {
        self.trial = false;
        let mut state = self.breaker.lock();
        state.trial_in_flight = false;
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures >= self.breaker.settings.failure_threshold {
            state.open_until = Some(Instant::now() + self.breaker.settings.open_for);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.breaker.lock().trial_in_flight = false;
        }
    }
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

    /// Lets a call through while closed; refuses at once while open; once the open period is
    /// over, lets exactly one trial call through and refuses the others until it ends.
    fn admit(&self) -> Result<Admission<'_>, CatalogUnavailable> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.open_until {
            None => Ok(Admission {
                breaker: self,
                trial: false,
            }),
            Some(until) if now < until => Err(CatalogUnavailable {
                reason: "circuit breaker open after repeated inventory failures".into(),
                retry_after: until - now,
            }),
            Some(_) if state.trial_in_flight => Err(CatalogUnavailable {
                reason: "circuit breaker half-open: a trial call to inventory is in flight".into(),
                retry_after: Duration::from_millis(100),
            }),
            Some(_) => {
                state.trial_in_flight = true;
                Ok(Admission {
                    breaker: self,
                    trial: true,
                })
            }
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
        breaker.admit().unwrap().failure();
        breaker
            .admit()
            .expect("one failure is not enough")
            .failure();
        let refused = breaker.admit().unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        breaker
            .admit()
            .expect("a trial call goes through after the open period")
            .failure();
        assert!(breaker.admit().is_err(), "a failed trial re-opens it");
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().unwrap().success();
        breaker.admit().unwrap().failure();
        assert!(breaker.admit().is_ok(), "a success resets the count");
    }

    #[test]
    fn a_half_open_breaker_lets_exactly_one_trial_call_through() {
        let breaker = Breaker::new(BreakerSettings {
            failure_threshold: 1,
            open_for: Duration::from_millis(50),
        });
        breaker.admit().unwrap().failure();
        assert!(breaker.admit().is_err(), "open");
        std::thread::sleep(Duration::from_millis(60));
        let trial = breaker.admit();
        assert!(trial.is_ok(), "the open period is over: one trial call");
        for _ in 0..10 {
            assert!(
                breaker.admit().is_err(),
                "while the trial is in flight, every other call is refused"
            );
        }
        // A trial whose caller went away frees the half-open state for the next caller...
        drop(trial);
        let trial = breaker.admit().expect("the next caller gets the trial");
        assert!(breaker.admit().is_err());
        // ...whose failure opens the breaker again, for the whole open period.
        trial.failure();
        let refused = breaker.admit().unwrap_err();
        assert!(
            refused.retry_after > Duration::from_millis(30),
            "{refused:?}"
        );
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().unwrap().success();
        let calls: Vec<_> = (0..5).map(|_| breaker.admit()).collect();
        assert!(
            calls.iter().all(Result::is_ok),
            "closed after a successful trial"
        );
    }
}
