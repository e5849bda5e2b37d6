use std::net::SocketAddr;
use std::time::Duration;

use shop_eventing::StartPosition;
use shop_runtime::config::{self, ConfigError};

/// Settings of the sales-analytics subscriber, from environment variables (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `SALES_ANALYTICS_DATABASE_URL` or `DATABASE_URL` | its own database [`postgres://postgres@127.0.0.1:5432/sales_analytics`] |
/// | `SALES_ANALYTICS_METRICS_ADDR` | Prometheus `/metrics` listen address [`0.0.0.0:9105`] |
/// | `KAFKA_BOOTSTRAP_SERVERS` | Kafka [`127.0.0.1:9092`] |
/// | `ORDER_EVENTS_TOPIC` | consumed [`order.events.v1`] |
/// | `SALES_ANALYTICS_CONSUMER_NAME` | inbox name: whose effects these are; dead letters go to `<name>.dlq` [`sales-analytics`] |
/// | `SALES_ANALYTICS_CONSUMER_GROUP` | Kafka consumer group [the name]; a new group with the same name replays safely |
/// | `SALES_ANALYTICS_START` | where a new group starts: `earliest` (backfill) or `latest` (live only) [`earliest`] |
/// | `KAFKA_SESSION_TIMEOUT_MS` | how long the group waits for a dead member [`10000`] |
/// | `SALES_ANALYTICS_INBOX_RETENTION_MS` | how long inbox rows (and published dead-letter rows) are kept: at least the `retention.ms` + `segment.ms` of `ORDER_EVENTS_TOPIC` (`shop_eventing::Retention`) [`1296000000`: 15 days] |
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub metrics_addr: SocketAddr,
    pub kafka_bootstrap_servers: String,
    pub order_events_topic: String,
    pub consumer_name: String,
    pub consumer_group: String,
    pub start: StartPosition,
    pub session_timeout: Duration,
    /// How long the consumer's inbox and dead-letter rows are kept.
    pub inbox_retention: Duration,
}

impl Settings {
    /// # Errors
    /// A variable that is set but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        let consumer_name = config::string("SALES_ANALYTICS_CONSUMER_NAME", "sales-analytics");
        let start = match config::string("SALES_ANALYTICS_START", "earliest").as_str() {
            "earliest" => StartPosition::Earliest,
            "latest" => StartPosition::Latest,
            other => {
                return Err(ConfigError {
                    name: "SALES_ANALYTICS_START".into(),
                    value: other.into(),
                    reason: "must be earliest or latest".into(),
                });
            }
        };
        Ok(Self {
            database_url: config::first_of(
                &["SALES_ANALYTICS_DATABASE_URL", "DATABASE_URL"],
                "postgres://postgres@127.0.0.1:5432/sales_analytics",
            ),
            metrics_addr: config::listen_addr("SALES_ANALYTICS_METRICS_ADDR", 9105)?,
            kafka_bootstrap_servers: config::string("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            order_events_topic: config::string(
                "ORDER_EVENTS_TOPIC",
                shop_proto::topics::ORDER_EVENTS,
            ),
            consumer_group: config::string("SALES_ANALYTICS_CONSUMER_GROUP", &consumer_name),
            consumer_name,
            start,
            session_timeout: config::millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
            inbox_retention: config::millis(
                "SALES_ANALYTICS_INBOX_RETENTION_MS",
                shop_eventing::Retention::default().window,
            )?,
        })
    }
}
