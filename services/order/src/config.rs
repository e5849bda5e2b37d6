use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shop_runtime::auth::AuthSettings;
use shop_runtime::config::{self, ConfigError};

/// Settings of the order service, from environment variables (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `ORDER_GRPC_ADDR` | gRPC listen address [`0.0.0.0:50051`] |
/// | `ORDER_METRICS_ADDR` | Prometheus `/metrics` listen address [`0.0.0.0:9101`] |
/// | `ORDER_ADMIN_ADDR` | admin gRPC API listen address, operators only (`shopctl`; never exposed to ordinary clients) [`0.0.0.0:50061`] |
/// | `ORDER_DATABASE_URL` or `DATABASE_URL` | its own database [`postgres://postgres@127.0.0.1:5432/orders`] |
/// | `ORDER_DB_MAX_CONNECTIONS` | pool size [`10`] |
/// | `INVENTORY_GRPC_URL` | inventory's gRPC endpoint, for prices [`http://127.0.0.1:50052`] |
/// | `INVENTORY_DEADLINE_MS` | deadline of a catalog call [`2000`] |
/// | `INVENTORY_BREAKER_FAILURES` | consecutive failures that open the breaker [`5`] |
/// | `INVENTORY_BREAKER_OPEN_MS` | how long it stays open [`10000`] |
/// | `KAFKA_BOOTSTRAP_SERVERS` | Kafka [`127.0.0.1:9092`] |
/// | `ORDER_EVENTS_TOPIC` | produced [`order.events.v1`] |
/// | `INVENTORY_EVENTS_TOPIC`, `PAYMENT_EVENTS_TOPIC` | consumed [`inventory.events.v1`, `payment.events.v1`] |
/// | `ORDER_CONSUMER_GROUP` | consumer group and inbox name [`order-service`] |
/// | `ORDER_SAGA_DEADLINE_MS` | an order still PENDING this long after it was placed is cancelled (reason `timeout`) and compensated [`600000`] |
/// | `ORDER_SAGA_SWEEP_INTERVAL_MS` | how often the deadline sweeper looks for such orders [`5000`] |
/// | `ORDER_SAGA_SWEEP_BATCH` | most orders the sweeper cancels in one transaction [`100`] |
/// | `GRPC_REQUEST_TIMEOUT_MS` | longest a call may run [`10000`] |
/// | `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_REFRESH_MS` | how callers' bearer tokens are checked: `shop_runtime::auth::AuthSettings` (a JWKS is required) |
/// | `ORDER_SERVICE_TOKEN_FILE` | the order service's own token, presented to inventory; read again every 30 s, renewed by its issuer (required) |
/// | `KAFKA_SESSION_TIMEOUT_MS` | how long the group waits for a dead member [`10000`] |
/// | `ORDER_INBOX_RETENTION_MS` | how long inbox rows (and published dead-letter rows) are kept: at least the `retention.ms` + `segment.ms` of `INVENTORY_EVENTS_TOPIC` and `PAYMENT_EVENTS_TOPIC` (`shop_eventing::Retention`) [`1296000000`: 15 days] |
#[derive(Clone, Debug)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Where the admin API (`shop.admin.v1.AdminService`) listens.
    pub admin_addr: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    pub inventory_url: String,
    pub inventory_deadline: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub kafka_bootstrap_servers: String,
    pub order_events_topic: String,
    pub inventory_events_topic: String,
    pub payment_events_topic: String,
    pub consumer_group: String,
    /// How long a saga may stay PENDING before it is cancelled with reason `timeout`.
    pub saga_deadline: Duration,
    /// How often the sweeper looks for orders past the deadline.
    pub saga_sweep_interval: Duration,
    /// Most overdue orders cancelled per transaction.
    pub saga_sweep_batch: u32,
    pub request_timeout: Duration,
    /// How callers are authenticated.
    pub auth: AuthSettings,
    /// The file holding this service's own token (for its calls to inventory).
    pub service_token_file: Option<PathBuf>,
    pub session_timeout: Duration,
    /// How long the consumer's inbox and dead-letter rows are kept.
    pub inbox_retention: Duration,
}

impl Settings {
    /// # Errors
    /// A variable that is set but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::first_of(
            &["ORDER_DATABASE_URL", "DATABASE_URL"],
            "postgres://postgres@127.0.0.1:5432/orders",
        );
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
            grpc_addr: config::listen_addr("ORDER_GRPC_ADDR", 50051)?,
            metrics_addr: config::listen_addr("ORDER_METRICS_ADDR", 9101)?,
            admin_addr: config::listen_addr("ORDER_ADMIN_ADDR", 50061)?,
            database_url,
            db_max_connections: config::parse("ORDER_DB_MAX_CONNECTIONS", 10)?,
            inventory_url: config::string("INVENTORY_GRPC_URL", "http://127.0.0.1:50052"),
            inventory_deadline: config::millis("INVENTORY_DEADLINE_MS", Duration::from_secs(2))?,
            breaker_failures: config::parse("INVENTORY_BREAKER_FAILURES", 5)?,
            breaker_open_for: config::millis("INVENTORY_BREAKER_OPEN_MS", Duration::from_secs(10))?,
            kafka_bootstrap_servers: config::string("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            order_events_topic: config::string(
                "ORDER_EVENTS_TOPIC",
                shop_proto::topics::ORDER_EVENTS,
            ),
            inventory_events_topic: config::string(
                "INVENTORY_EVENTS_TOPIC",
                shop_proto::topics::INVENTORY_EVENTS,
            ),
            payment_events_topic: config::string(
                "PAYMENT_EVENTS_TOPIC",
                shop_proto::topics::PAYMENT_EVENTS,
            ),
            consumer_group: config::string("ORDER_CONSUMER_GROUP", "order-service"),
            saga_deadline,
            saga_sweep_interval: config::millis(
                "ORDER_SAGA_SWEEP_INTERVAL_MS",
                Duration::from_secs(5),
            )?,
            saga_sweep_batch: config::parse("ORDER_SAGA_SWEEP_BATCH", 100)?,
            request_timeout: config::millis("GRPC_REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            auth: AuthSettings::from_env()?,
            service_token_file: config::optional("ORDER_SERVICE_TOKEN_FILE").map(PathBuf::from),
            session_timeout: config::millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
            inbox_retention: config::millis(
                "ORDER_INBOX_RETENTION_MS",
                shop_eventing::Retention::default().window,
            )?,
        })
    }
}
