use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use shop_eventing::RetryPolicy;
use shop_runtime::auth::AuthSettings;
use shop_runtime::config::{self, ConfigError};

/// Settings of the notification service, from environment variables (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `NOTIFICATION_GRPC_ADDR` | gRPC listen address [`0.0.0.0:50054`] |
/// | `NOTIFICATION_METRICS_ADDR` | Prometheus `/metrics` listen address [`0.0.0.0:9104`] |
/// | `NOTIFICATION_ADMIN_ADDR` | admin gRPC API listen address, operators only (`shopctl`; never exposed to ordinary clients) [`0.0.0.0:50064`] |
/// | `NOTIFICATION_DATABASE_URL` or `DATABASE_URL` | its own database [`postgres://postgres@127.0.0.1:5432/notification`] |
/// | `NOTIFICATION_DB_MAX_CONNECTIONS` | pool size [`10`] |
/// | `KAFKA_BOOTSTRAP_SERVERS` | Kafka [`127.0.0.1:9092`] |
/// | `ORDER_EVENTS_TOPIC` | consumed [`order.events.v1`] |
/// | `NOTIFICATION_CONSUMER_GROUP` | consumer group and inbox name [`notification-service`] |
/// | `NOTIFICATION_WEBHOOK_URL` | when set, notifications are POSTed there (channel `webhook`); otherwise they are logged (channel `log`) [unset] |
/// | `NOTIFICATION_WEBHOOK_TIMEOUT_MS` | longest a webhook call may take [`5000`] |
/// | `NOTIFICATION_MAX_ATTEMPTS` | delivery attempts before a notification is FAILED [`8`] |
/// | `NOTIFICATION_RETRY_INITIAL_BACKOFF_MS` | upper bound of the delay after the first failed attempt [`1000`] |
/// | `NOTIFICATION_RETRY_MAX_BACKOFF_MS` | upper bound of any delay between attempts [`300000`] |
/// | `NOTIFICATION_POLL_INTERVAL_MS` | how often an idle delivery worker looks for due notifications [`100`] |
/// | `NOTIFICATION_DELIVERY_CONCURRENCY` | most deliveries in flight at once [`16`] |
/// | `GRPC_REQUEST_TIMEOUT_MS` | longest a call may run [`10000`] |
/// | `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_REFRESH_MS` | how callers' bearer tokens are checked: `shop_runtime::auth::AuthSettings` (a JWKS is required) |
/// | `KAFKA_SESSION_TIMEOUT_MS` | how long the group waits for a dead member [`10000`] |
/// | `NOTIFICATION_INBOX_RETENTION_MS` | how long inbox rows (and published dead-letter rows) are kept: at least the `retention.ms` + `segment.ms` of `ORDER_EVENTS_TOPIC` (`shop_eventing::Retention`) [`1296000000`: 15 days] |
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
    pub consumer_group: String,
    pub request_timeout: Duration,
    /// How callers are authenticated.
    pub auth: AuthSettings,
    pub session_timeout: Duration,
    /// How long the consumer's inbox and dead-letter rows are kept.
    pub inbox_retention: Duration,
    /// Where the webhook channel POSTs; `None` selects the log channel.
    pub webhook_url: Option<Url>,
    pub webhook_timeout: Duration,
    /// Delivery retries: `max_attempts` tries in all, jittered exponential backoff between them.
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub delivery_concurrency: usize,
}

impl Settings {
    /// # Errors
    /// A variable that is set but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::first_of(
            &["NOTIFICATION_DATABASE_URL", "DATABASE_URL"],
            "postgres://postgres@127.0.0.1:5432/notification",
        );
        Ok(Self {
            grpc_addr: config::listen_addr("NOTIFICATION_GRPC_ADDR", 50054)?,
            metrics_addr: config::listen_addr("NOTIFICATION_METRICS_ADDR", 9104)?,
            admin_addr: config::listen_addr("NOTIFICATION_ADMIN_ADDR", 50064)?,
            database_url,
            db_max_connections: config::parse("NOTIFICATION_DB_MAX_CONNECTIONS", 10)?,
            kafka_bootstrap_servers: config::string("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            order_events_topic: config::string(
                "ORDER_EVENTS_TOPIC",
                shop_proto::topics::ORDER_EVENTS,
            ),
            consumer_group: config::string("NOTIFICATION_CONSUMER_GROUP", "notification-service"),
            request_timeout: config::millis("GRPC_REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            auth: AuthSettings::from_env()?,
            session_timeout: config::millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
            inbox_retention: config::millis(
                "NOTIFICATION_INBOX_RETENTION_MS",
                shop_eventing::Retention::default().window,
            )?,
            webhook_url: webhook_url("NOTIFICATION_WEBHOOK_URL")?,
            webhook_timeout: positive(
                "NOTIFICATION_WEBHOOK_TIMEOUT_MS",
                config::millis("NOTIFICATION_WEBHOOK_TIMEOUT_MS", Duration::from_secs(5))?,
            )?,
            retry: RetryPolicy {
                max_attempts: at_least_one(
                    "NOTIFICATION_MAX_ATTEMPTS",
                    config::parse("NOTIFICATION_MAX_ATTEMPTS", 8u32)?,
                )?,
                initial_backoff: config::millis(
                    "NOTIFICATION_RETRY_INITIAL_BACKOFF_MS",
                    Duration::from_secs(1),
                )?,
                max_backoff: config::millis(
                    "NOTIFICATION_RETRY_MAX_BACKOFF_MS",
                    Duration::from_secs(300),
                )?,
            },
            poll_interval: positive(
                "NOTIFICATION_POLL_INTERVAL_MS",
                config::millis("NOTIFICATION_POLL_INTERVAL_MS", Duration::from_millis(100))?,
            )?,
            delivery_concurrency: at_least_one(
                "NOTIFICATION_DELIVERY_CONCURRENCY",
                config::parse("NOTIFICATION_DELIVERY_CONCURRENCY", 16usize)?,
            )?,
        })
    }
}

/// An absolute `http` or `https` URL, or `None` when the variable is unset or empty.
fn webhook_url(name: &str) -> Result<Option<Url>, ConfigError> {
    let Some(value) = config::optional(name) else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError {
        name: name.to_owned(),
        value: value.clone(),
        reason,
    };
    let url = value.parse::<Url>().map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http or https URL".into()));
    }
    Ok(Some(url))
}

fn at_least_one<T: PartialOrd + From<u8> + std::fmt::Display>(
    name: &str,
    value: T,
) -> Result<T, ConfigError> {
    if value < T::from(1) {
        return Err(ConfigError {
            name: name.to_owned(),
            value: value.to_string(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

fn positive(name: &str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError {
            name: name.to_owned(),
            value: "0".into(),
            reason: "must be more than 0 ms".into(),
        });
    }
    Ok(value)
}
