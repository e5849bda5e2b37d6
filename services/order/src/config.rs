use std::path::PathBuf;
use std::time::Duration;

use shop_runtime::config::{self, ConfigError, ServiceSettings};
use shop_runtime::skeleton::Service as _;

use crate::app::AdmissionLimits;
use crate::startup::Orders;

/// Settings of the order service, from environment variables: those of every service
/// ([`ServiceSettings`], prefix `ORDER`), and (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `INVENTORY_GRPC_URL` | inventory's gRPC endpoint, for prices [`http://127.0.0.1:50052`] |
/// | `INVENTORY_DEADLINE_MS` | deadline of a catalog call [`2000`] |
/// | `INVENTORY_BREAKER_FAILURES` | consecutive failures that open the breaker [`5`] |
/// | `INVENTORY_BREAKER_OPEN_MS` | how long it stays open [`10000`] |
/// | `ORDER_EVENTS_TOPIC` | produced [`order.events.v1`] |
/// | `INVENTORY_EVENTS_TOPIC`, `PAYMENT_EVENTS_TOPIC` | consumed [`inventory.events.v1`, `payment.events.v1`] |
/// | `ORDER_SAGA_DEADLINE_MS` | an order still PENDING this long after it was placed is cancelled (reason `timeout`) and compensated [`600000`] |
/// | `ORDER_SAGA_SWEEP_INTERVAL_MS` | how often the deadline sweeper looks for such orders [`5000`] |
/// | `ORDER_SAGA_SWEEP_BATCH` | most orders the sweeper cancels in one transaction [`100`] |
/// | `ORDER_MAX_SAGA_WAIT_MS` | an order pending longer than this is late [`300`] |
/// | `ORDER_MAX_LATE_ORDERS` | while this many orders placed in the last 30 s are late, PlaceOrder answers RESOURCE_EXHAUSTED with a RetryInfo ([`crate::app::Backlog`]) [`16`] |
/// | `ORDER_MAX_PENDING_ORDERS` | the most orders pending at once: the adaptive limit on them never goes past it [`1000`] |
/// | `ORDER_BACKLOG_REFRESH_MS` | how often the pending orders are counted for that [`50`] |
/// | `ORDER_SERVICE_TOKEN_FILE` | the order service's own token, presented to inventory; read again every 30 s, renewed by its issuer (required) |
#[derive(Clone, Debug)]
pub struct Settings {
    pub service: ServiceSettings,
    pub inventory_url: String,
    pub inventory_deadline: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub order_events_topic: String,
    pub inventory_events_topic: String,
    pub payment_events_topic: String,
    /// How long a saga may stay PENDING before it is cancelled with reason `timeout`.
    pub saga_deadline: Duration,
    /// How often the sweeper looks for orders past the deadline.
    pub saga_sweep_interval: Duration,
    /// Most overdue orders cancelled per transaction.
    pub saga_sweep_batch: u32,
    /// When PlaceOrder refuses new orders: the saga's backlog, late or too long.
    pub admission: AdmissionLimits,
    /// How often the backlog is counted.
    pub backlog_refresh: Duration,
    /// The file holding this service's own token (for its calls to inventory).
    pub service_token_file: Option<PathBuf>,
}

impl Settings {
    /// For a test: [`ServiceSettings::for_test`], inventory at `inventory_url`, the suite's
    /// topic names, the production saga deadline swept every 200 ms, an admission that refuses
    /// only far behind, and no token file.
    pub fn for_test(service: ServiceSettings, inventory_url: impl Into<String>) -> Self {
        Self {
            service,
            inventory_url: inventory_url.into(),
            inventory_deadline: Duration::from_secs(2),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
            order_events_topic: shop_proto::topics::ORDER_EVENTS.to_owned(),
            inventory_events_topic: shop_proto::topics::INVENTORY_EVENTS.to_owned(),
            payment_events_topic: shop_proto::topics::PAYMENT_EVENTS.to_owned(),
            saga_deadline: Duration::from_secs(600),
            saga_sweep_interval: Duration::from_millis(200),
            saga_sweep_batch: 100,
            // Tests run debug builds, several at once, and follow every order they place:
            // late past 10 s, 250 pending before a refusal (the admission's own tests set
            // theirs).
            admission: AdmissionLimits {
                max_wait: Duration::from_secs(10),
                max_late: 250,
                max_pending: 1000,
            },
            backlog_refresh: Duration::from_millis(50),
            service_token_file: None,
        }
    }
}

impl config::Settings for Settings {
    fn from_env() -> Result<Self, ConfigError> {
        let service = ServiceSettings::from_env(&Orders::IDENTITY)?;
        let saga_deadline = config::millis("ORDER_SAGA_DEADLINE_MS", Duration::from_secs(600))?;
        // A deadline of 0 would cancel every order as it is placed; over 30 days, no saga is
        // waited for any more, and the interval arithmetic in SQL stays in range.
        if saga_deadline < Duration::from_secs(1)
            || saga_deadline > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError {
                name: "ORDER_SAGA_DEADLINE_MS".into(),
                value: saga_deadline.as_millis().to_string(),
                reason: "must be 1000 (1 s) to 2592000000 (30 days)".into(),
            });
        }
        Ok(Self {
            service,
            inventory_url: config::string("INVENTORY_GRPC_URL", "http://127.0.0.1:50052"),
            inventory_deadline: config::millis("INVENTORY_DEADLINE_MS", Duration::from_secs(2))?,
            breaker_failures: config::parse("INVENTORY_BREAKER_FAILURES", 5)?,
            breaker_open_for: config::millis("INVENTORY_BREAKER_OPEN_MS", Duration::from_secs(10))?,
            order_events_topic: config::topics::order_events(),
            inventory_events_topic: config::topics::inventory_events(),
            payment_events_topic: config::topics::payment_events(),
            saga_deadline,
            saga_sweep_interval: config::millis(
                "ORDER_SAGA_SWEEP_INTERVAL_MS",
                Duration::from_secs(5),
            )?,
            saga_sweep_batch: config::parse("ORDER_SAGA_SWEEP_BATCH", 100)?,
            admission: AdmissionLimits {
                max_wait: config::millis("ORDER_MAX_SAGA_WAIT_MS", Duration::from_millis(300))?,
                max_late: config::parse("ORDER_MAX_LATE_ORDERS", 16)?,
                max_pending: config::parse("ORDER_MAX_PENDING_ORDERS", 1000)?,
            },
            backlog_refresh: config::millis("ORDER_BACKLOG_REFRESH_MS", Duration::from_millis(50))?,
            service_token_file: config::optional("ORDER_SERVICE_TOKEN_FILE").map(PathBuf::from),
        })
    }

    fn service(&self) -> &ServiceSettings {
        &self.service
    }
}
