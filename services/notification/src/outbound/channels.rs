//! The delivery channels: `log` (the default) writes a structured INFO line; `webhook` POSTs the
//! notification as JSON to a configured URL.

use std::time::Duration;

use chrono::SecondsFormat;
use reqwest::{Client, StatusCode, Url, header, redirect};
use serde::Serialize;
use uuid::Uuid;

use crate::app::{Channel, DeliveryError, DeliveryReceipt};
use crate::domain::Notification;

/// Writes each notification as a structured INFO log line; never fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogChannel;

impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, notification: &Notification) -> Result<DeliveryReceipt, DeliveryError> {
        tracing::info!(
            notification.id = %notification.notification_id,
            order.id = %notification.order_id,
            customer.id = %notification.customer_id,
            kind = notification.kind.as_str(),
            message = %notification.message,
            "Notification to the customer."
        );
        Ok(DeliveryReceipt::default())
    }
}

/// POSTs each notification as JSON (`notification_id`, `order_id`, `customer_id`, `kind`,
/// `message`, `created_at`) with an `Idempotency-Key` header holding the notification id, the
/// same for every attempt. A 2xx answer delivers it; any other answer, a transport error or no
/// answer within the timeout is a failed attempt. Redirects are not followed.
#[derive(Clone, Debug)]
pub struct WebhookChannel {
    client: Client,
    url: Url,
    timeout: Duration,
}

/// The JSON body of a webhook call.
#[derive(Debug, Serialize)]
struct WebhookBody<'a> {
    notification_id: Uuid,
    order_id: &'a str,
    customer_id: &'a str,
    kind: &'static str,
    message: &'a str,
    /// RFC 3339, UTC.
    created_at: String,
}

/// The most of a failure answer's body kept in the attempt's error.
const ERROR_BODY_LIMIT: usize = 200;

impl WebhookChannel {
    /// A channel POSTing to `url`; each call (connecting included) may take at most `timeout`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS backend).
    pub fn new(url: Url, timeout: Duration) -> reqwest::Result<Self> {
        let client = Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!(
                "shop-notification-service/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            client,
            url,
            timeout,
        })
    }

    /// Where it POSTs.
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn transport_failure(&self, error: reqwest::Error) -> DeliveryError {
        let reason = if error.is_timeout() {
            format!("no answer within {} ms", self.timeout.as_millis())
        } else {
            // Without the URL, which may carry a secret; with the causes (refused, DNS, TLS).
            format!("{:#}", anyhow::Error::new(error.without_url()))
        };
        DeliveryError {
            reason,
            http_status: None,
        }
    }
}

impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, notification: &Notification) -> Result<DeliveryReceipt, DeliveryError> {
        let body = WebhookBody {
            notification_id: notification.notification_id,
            order_id: &notification.order_id,
            customer_id: notification.customer_id.as_str(),
            kind: notification.kind.as_str(),
            message: &notification.message,
            created_at: notification
                .created_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", notification.notification_id.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .json(&body);
        for (name, value) in shop_telemetry::current_trace_headers() {
            request = request.header(name, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_failure(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(DeliveryReceipt {
                http_status: Some(status.as_u16()),
            });
        }
        // The start of the answer often says why; a failure to read it is no more informative.
        let excerpt = match response.chunk().await {
            Ok(Some(chunk)) => String::from_utf8_lossy(&chunk[..chunk.len().min(ERROR_BODY_LIMIT)])
                .trim()
                .to_owned(),
            _ => String::new(),
        };
        Err(DeliveryError {
            reason: describe_status(status, &excerpt),
            http_status: Some(status.as_u16()),
        })
    }
}

fn describe_status(status: StatusCode, excerpt: &str) -> String {
    if excerpt.is_empty() {
        format!("webhook answered {status}")
    } else {
        format!("webhook answered {status}: {excerpt}")
    }
}

/// The channel the settings select: the webhook when a URL is configured, else the log.
#[derive(Clone, Debug)]
pub enum ConfiguredChannel {
    Log(LogChannel),
    Webhook(WebhookChannel),
}

impl Channel for ConfiguredChannel {
    fn name(&self) -> &'static str {
        match self {
            Self::Log(channel) => channel.name(),
            Self::Webhook(channel) => channel.name(),
        }
    }

    async fn deliver(&self, notification: &Notification) -> Result<DeliveryReceipt, DeliveryError> {
        match self {
            Self::Log(channel) => channel.deliver(notification).await,
            Self::Webhook(channel) => channel.deliver(notification).await,
        }
    }
}
