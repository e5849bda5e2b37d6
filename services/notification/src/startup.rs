//! What the notification process is made of: its API, the order events it consumes and the
//! delivery worker that sends what they ask for through the configured channel. It publishes
//! no events, so it has no outbox relay. The rest (database, ports, admin API, shutdown) is the
//! skeleton's (`shop_runtime::skeleton`).

use std::time::Duration;

use shop_proto::notification::v1::notification_service_server::NotificationServiceServer;
use shop_runtime::config::Identity;
use shop_runtime::skeleton::{self, Api, Prepare, Wiring};
use sqlx::migrate::Migrator;

use crate::app::{Channel, DeliveryConfig, DeliveryWorker};
use crate::config::Settings;
use crate::inbound::grpc::NotificationApi;
use crate::inbound::kafka::OrderEvents;
use crate::metrics::NotificationMetrics;
use crate::outbound::channels::{ConfiguredChannel, LogChannel, WebhookChannel};

/// How much longer than the longest delivery a claim on a notification lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The notification service: what customers are told about their orders, and its delivery.
#[derive(Debug)]
pub struct Notifications;

/// A built, not yet running, notification service.
pub type Application = skeleton::Application<Notifications>;

impl skeleton::Service for Notifications {
    const MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
    const IDENTITY: Identity = Identity {
        name: "notification",
        binary: "notification-service",
        database: "notification",
        grpc_port: 50054,
        metrics_port: 9104,
        admin_port: 50064,
    };
    type Settings = Settings;
    /// The delivery channel (its HTTP client built before anything listens).
    type Prepared = ConfiguredChannel;

    fn wire(
        settings: Settings,
        channel: ConfiguredChannel,
        wiring: &mut Wiring,
    ) -> anyhow::Result<Api> {
        let lease = match &channel {
            ConfiguredChannel::Webhook(webhook) => {
                tracing::info!(
                    host = webhook.url().host_str().unwrap_or(""),
                    timeout = ?settings.webhook_timeout,
                    "Delivering notifications to a webhook."
                );
                settings.webhook_timeout + LEASE_MARGIN
            }
            ConfiguredChannel::Log(_) => {
                tracing::info!("No webhook configured; delivering notifications to the log.");
                LEASE_MARGIN
            }
        };
        let metrics = NotificationMetrics::new(wiring.registry(), channel.name());
        wiring.consumer(
            "order events consumer",
            [settings.order_events_topic],
            OrderEvents {
                channel: channel.name(),
                metrics: metrics.clone(),
            },
        )?;
        let worker = DeliveryWorker::new(
            wiring.pool.clone(),
            channel,
            DeliveryConfig {
                retry: settings.retry,
                poll_interval: settings.poll_interval,
                concurrency: settings.delivery_concurrency,
                lease,
                metrics,
            },
        );
        let shutdown = wiring.shutdown();
        wiring.task("delivery worker", async move { worker.run(shutdown).await });
        Ok(Api::new(NotificationServiceServer::new(NotificationApi {
            pool: wiring.pool.clone(),
        })))
    }
}

impl Prepare<Settings> for ConfiguredChannel {
    async fn load(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match &settings.webhook_url {
            Some(url) => ConfiguredChannel::Webhook(WebhookChannel::new(
                url.clone(),
                settings.webhook_timeout,
            )?),
            None => ConfiguredChannel::Log(LogChannel),
        })
    }
}
