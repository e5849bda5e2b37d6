//! Building and running the notification process: database, migrations, gRPC listener, order
//! events consumer and delivery worker. It publishes no events, so it runs no outbox relay.

use std::net::SocketAddr;
use std::time::Duration;

use shop_eventing::Consumer;
use shop_proto::notification::v1::notification_service_server::NotificationServiceServer;
use shop_runtime::admin::AdminApi;
use shop_runtime::auth::Authenticator;
use shop_runtime::observability::Observability;
use shop_runtime::service::{Bound, Ports, ServiceRunner};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::adapters::channels::{ConfiguredChannel, LogChannel, WebhookChannel};
use crate::adapters::grpc::NotificationApi;
use crate::adapters::kafka::OrderEvents;
use crate::app::{Channel, DeliveryConfig, DeliveryWorker};
use crate::config::Settings;
use crate::metrics::NotificationMetrics;

/// How much longer than the longest delivery a claim on a notification lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The service's own schema (the eventing tables come with `shop_eventing::migrate`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A built, not yet running, notification service.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    bound: Bound,
    auth: Authenticator,
    channel: ConfiguredChannel,
}

impl Application {
    /// Connects to the database (waiting for it), migrates it, builds the delivery channel and
    /// binds the gRPC port.
    ///
    /// # Errors
    /// When the token keys cannot be read, the database stays unreachable, a migration fails, the HTTP client cannot be built
    /// or the port is taken.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        // First: without its callers' keys the service could serve nobody.
        let auth = Authenticator::load(&settings.auth).await?;
        let channel = match &settings.webhook_url {
            Some(url) => ConfiguredChannel::Webhook(WebhookChannel::new(
                url.clone(),
                settings.webhook_timeout,
            )?),
            None => ConfiguredChannel::Log(LogChannel),
        };
        // The inbox tables come with it; the outbox stays empty.
        let bound = Bound::open(
            &settings.database_url,
            settings.db_max_connections,
            &MIGRATIONS,
            Ports {
                grpc: settings.grpc_addr,
                metrics: settings.metrics_addr,
                admin: settings.admin_addr,
            },
            shutdown,
        )
        .await?;
        Ok(Self {
            settings,
            bound,
            auth,
            channel,
        })
    }

    /// Where the gRPC server listens (the real port when configured with port 0).
    ///
    /// # Panics
    /// If the socket has no local address (it always has once bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.grpc_addr()
    }

    /// Where `/metrics` is served (the real port when configured with port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.bound.metrics_addr()
    }

    /// Where the admin API listens (the real port when configured with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.bound.admin_addr()
    }

    /// The service's database pool.
    pub fn pool(&self) -> &PgPool {
        &self.bound.pool
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When a part of the service fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            bound:
                Bound {
                    pool,
                    grpc: listener,
                    metrics: metrics_listener,
                    admin: admin_listener,
                },
            auth,
            channel,
        } = self;
        match &channel {
            ConfiguredChannel::Webhook(webhook) => tracing::info!(
                host = webhook.url().host_str().unwrap_or(""),
                timeout = ?settings.webhook_timeout,
                "Delivering notifications to a webhook."
            ),
            ConfiguredChannel::Log(_) => {
                tracing::info!("No webhook configured; delivering notifications to the log.");
            }
        }
        let mut observability = Observability::new();
        let metrics = NotificationMetrics::new(observability.registry(), channel.name());
        let kafka = shop_runtime::kafka::client_config(&settings.kafka_bootstrap_servers);
        let mut consumer_config =
            observability.consumer_config(&settings.consumer_group, [&settings.order_events_topic]);
        consumer_config.session_timeout = settings.session_timeout;
        consumer_config.retention.window = settings.inbox_retention;
        // It publishes nothing: RepublishRecords refuses every topic.
        let admin = AdminApi::new("notification", pool.clone()).consumer(&consumer_config);
        let consumer = Consumer::new(
            pool.clone(),
            &kafka,
            consumer_config,
            OrderEvents {
                channel: channel.name(),
                metrics: metrics.clone(),
            },
        )?;
        let lease = match &channel {
            ConfiguredChannel::Webhook(_) => settings.webhook_timeout + LEASE_MARGIN,
            ConfiguredChannel::Log(_) => LEASE_MARGIN,
        };
        let worker = DeliveryWorker::new(
            pool.clone(),
            channel,
            DeliveryConfig {
                retry: settings.retry.clone(),
                poll_interval: settings.poll_interval,
                concurrency: settings.delivery_concurrency,
                lease,
                metrics,
            },
        );

        let api = NotificationServiceServer::new(NotificationApi { pool: pool.clone() });
        let runner = ServiceRunner::new(
            listener,
            Routes::new(api),
            <NotificationServiceServer<NotificationApi> as NamedService>::NAME,
            settings.request_timeout,
            auth,
            shutdown,
        );
        let worker_shutdown = runner.shutdown().clone();
        runner
            .admin(admin_listener, admin)
            .metrics(metrics_listener, observability, pool.clone())
            .consumer("order events consumer", consumer)
            .task("delivery worker", async move {
                worker.run(worker_shutdown).await
            })
            .run()
            .await
    }
}
