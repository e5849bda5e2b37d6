use std::net::SocketAddr;
use std::time::Duration;

use shop_runtime::auth::AuthSettings;
use shop_runtime::config::{self, ConfigError};

/// Settings of the payment service, from environment variables (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `PAYMENT_GRPC_ADDR` | gRPC listen address [`0.0.0.0:50053`] |
/// | `PAYMENT_METRICS_ADDR` | Prometheus `/metrics` listen address [`0.0.0.0:9103`] |
/// | `PAYMENT_ADMIN_ADDR` | admin gRPC API listen address, operators only (`shopctl`; never exposed to ordinary clients) [`0.0.0.0:50063`] |
/// | `PAYMENT_DATABASE_URL` or `DATABASE_URL` | its own database [`postgres://postgres@127.0.0.1:5432/payment`] |
/// | `KAFKA_BOOTSTRAP_SERVERS` | Kafka [`127.0.0.1:9092`] |
/// | `ORDER_EVENTS_TOPIC` | consumed [`order.events.v1`] |
/// | `PAYMENT_EVENTS_TOPIC` | produced [`payment.events.v1`] |
/// | `PAYMENT_CONSUMER_GROUP` | consumer group and inbox name [`payment-service`] |
/// | `PAYMENT_DB_MAX_CONNECTIONS` | pool size [`10`] |
/// | `GRPC_REQUEST_TIMEOUT_MS` | longest a call may run [`10000`] |
/// | `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_REFRESH_MS` | how callers' bearer tokens are checked: `shop_runtime::auth::AuthSettings` (a JWKS is required) |
/// | `KAFKA_SESSION_TIMEOUT_MS` | how long the group waits for a dead member [`10000`] |
/// | `PAYMENT_INBOX_RETENTION_MS` | how long inbox rows (and published dead-letter rows) are kept: at least the `retention.ms` + `segment.ms` of `ORDER_EVENTS_TOPIC` (`shop_eventing::Retention`) [`1296000000`: 15 days] |
#[derive(Clone, Debug)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Where the admin API (`shop.admin.v1.AdminService`) listens.
    pub admin_addr: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    pub kafka_bootstrap_servers: String,
    pub order_events_topic: String,
    pub payment_events_topic: String,
    pub consumer_group: String,
    pub request_timeout: Duration,
    /// How callers are authenticated.
    pub auth: AuthSettings,
    pub session_timeout: Duration,
    /// How long the consumer's inbox and dead-letter rows are kept.
    pub inbox_retention: Duration,
}

impl Settings {
    /// # Errors
    /// A variable that is set but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::first_of(
            &["PAYMENT_DATABASE_URL", "DATABASE_URL"],
            "postgres://postgres@127.0.0.1:5432/payment",
        );
        Ok(Self {
            grpc_addr: config::listen_addr("PAYMENT_GRPC_ADDR", 50053)?,
            metrics_addr: config::listen_addr("PAYMENT_METRICS_ADDR", 9103)?,
            admin_addr: config::listen_addr("PAYMENT_ADMIN_ADDR", 50063)?,
            database_url,
            db_max_connections: config::parse("PAYMENT_DB_MAX_CONNECTIONS", 10)?,
            kafka_bootstrap_servers: config::string("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            order_events_topic: config::string(
                "ORDER_EVENTS_TOPIC",
                shop_proto::topics::ORDER_EVENTS,
            ),
            payment_events_topic: config::string(
                "PAYMENT_EVENTS_TOPIC",
                shop_proto::topics::PAYMENT_EVENTS,
            ),
            consumer_group: config::string("PAYMENT_CONSUMER_GROUP", "payment-service"),
            request_timeout: config::millis("GRPC_REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            auth: AuthSettings::from_env()?,
            session_timeout: config::millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
            inbox_retention: config::millis(
                "PAYMENT_INBOX_RETENTION_MS",
                shop_eventing::Retention::default().window,
            )?,
        })
    }
}
