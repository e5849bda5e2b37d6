use std::time::Duration;

use reqwest::Url;
use shop_eventing::RetryPolicy;
use shop_runtime::config::{self, ConfigError, ServiceSettings};
use shop_runtime::skeleton::Service as _;

use crate::startup::Notifications;

/// Settings of the notification service, from environment variables: those of every service
/// ([`ServiceSettings`], prefix `NOTIFICATION`), and (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `ORDER_EVENTS_TOPIC` | consumed [`order.events.v1`] |
/// | `NOTIFICATION_WEBHOOK_URL` | when set, notifications are POSTed there (channel `webhook`); otherwise they are logged (channel `log`) [unset] |
/// | `NOTIFICATION_WEBHOOK_TIMEOUT_MS` | longest a webhook call may take [`5000`] |
/// | `NOTIFICATION_MAX_ATTEMPTS` | delivery attempts before a notification is FAILED [`8`] |
/// | `NOTIFICATION_RETRY_INITIAL_BACKOFF_MS` | upper bound of the delay after the first failed attempt [`1000`] |
/// | `NOTIFICATION_RETRY_MAX_BACKOFF_MS` | upper bound of any delay between attempts [`300000`] |
/// | `NOTIFICATION_POLL_INTERVAL_MS` | how often an idle delivery worker looks for due notifications [`100`] |
/// | `NOTIFICATION_DELIVERY_CONCURRENCY` | most deliveries in flight at once [`16`] |
#[derive(Clone, Debug)]
pub struct Settings {
    pub service: ServiceSettings,
    pub order_events_topic: String,
    /// Where the webhook channel POSTs; `None` selects the log channel.
    pub webhook_url: Option<Url>,
    pub webhook_timeout: Duration,
    /// Delivery retries: `max_attempts` tries in all, jittered exponential backoff between them.
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub delivery_concurrency: usize,
}

impl Settings {
    /// For a test: [`ServiceSettings::for_test`], the suite's order topic, the log channel,
    /// and quick retries (8 attempts, 50 ms to 500 ms apart) polled every 50 ms.
    pub fn for_test(service: ServiceSettings) -> Self {
        Self {
            service,
            order_events_topic: shop_proto::topics::ORDER_EVENTS.to_owned(),
            webhook_url: None,
            webhook_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 8,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
            },
            poll_interval: Duration::from_millis(50),
            delivery_concurrency: 4,
        }
    }
}

impl config::Settings for Settings {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(&Notifications::IDENTITY)?,
            order_events_topic: config::topics::order_events(),
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

    fn service(&self) -> &ServiceSettings {
        &self.service
    }
}

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
