//! Wiring, with nothing but the SDK: the database (with the inbox tables), one consumer and
//! `/metrics`, started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use shop_eventing::Consumer;
use shop_runtime::observability::{Observability, serve_metrics};
use shop_runtime::tasks::{Task, run_until_stopped};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::handler::{SalesAnalytics, handler};

/// The subscriber's own schema (the inbox tables come with `shop_eventing::migrate`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Opens (waiting for it) and migrates the subscriber's database.
///
/// # Errors
/// When the database stays unreachable or a migration fails.
pub async fn open_database(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    shop_runtime::service::open_database(&settings.database_url, 5, &MIGRATIONS, shutdown).await
}

/// A built, not yet running, subscriber.
#[derive(Debug)]
pub struct Subscriber {
    pool: PgPool,
    metrics: TcpListener,
    observability: Observability,
    consumer: Consumer<shop_eventing::Dispatcher<SalesAnalytics>>,
}

impl Subscriber {
    /// Opens the database, binds the metrics port and joins the consumer group.
    ///
    /// # Errors
    /// When the database stays unreachable, the port is taken or Kafka refuses the consumer.
    pub async fn build(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let pool = open_database(settings, shutdown).await?;
        let metrics = TcpListener::bind(settings.metrics_addr).await?;
        let observability = Observability::new();
        let mut config =
            observability.consumer_config(&settings.consumer_name, [&settings.order_events_topic]);
        config.group_id.clone_from(&settings.consumer_group);
        config.start = settings.start;
        config.session_timeout = settings.session_timeout;
        config.retention.window = settings.inbox_retention;
        let kafka = shop_runtime::kafka::client_config(&settings.kafka_bootstrap_servers);
        let consumer = Consumer::new(pool.clone(), &kafka, config, handler())?;
        Ok(Self {
            pool,
            metrics,
            observability,
            consumer,
        })
    }

    /// Where `/metrics` is served (the real port when configured with port 0).
    ///
    /// # Panics
    /// If the socket has no local address (it always has once bound).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr().expect("bound listener")
    }

    /// The subscriber's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Consumes and serves `/metrics` until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the consumer or the metrics server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            pool,
            metrics,
            observability,
            consumer,
        } = self;
        let (metrics_stop, consumer_stop) = (shutdown.clone(), shutdown.clone());
        let tasks: Vec<(&'static str, Task)> = vec![
            (
                "metrics",
                Box::pin(async move {
                    Ok(serve_metrics(metrics, Arc::new(observability), pool, metrics_stop).await?)
                }),
            ),
            (
                "order events consumer",
                Box::pin(async move { Ok(consumer.run(consumer_stop).await?) }),
            ),
        ];
        run_until_stopped(tasks, shutdown).await
    }
}
