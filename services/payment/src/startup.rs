//! Building and running the payment process: database, migrations, gRPC listener, relay and
//! consumer.

use std::net::SocketAddr;

use shop_eventing::{Consumer, Outbox, Relay};
use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;
use shop_runtime::admin::AdminApi;
use shop_runtime::auth::Authenticator;
use shop_runtime::observability::Observability;
use shop_runtime::service::{Bound, Ports, ServiceRunner};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::adapters::grpc::PaymentApi;
use crate::adapters::kafka::OrderEvents;
use crate::app::Events;
use crate::config::Settings;
use crate::metrics::PaymentMetrics;

/// The service's own schema (the eventing tables come with `shop_eventing::migrate`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A built, not yet running, payment service.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    bound: Bound,
    auth: Authenticator,
}

impl Application {
    /// Connects to the database (waiting for it), migrates it and binds the gRPC port.
    ///
    /// # Errors
    /// When the token keys cannot be read, the database stays unreachable, a migration fails or the port is taken.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        // First: without its callers' keys the service could serve nobody.
        let auth = Authenticator::load(&settings.auth).await?;
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
        } = self;
        let mut observability = Observability::new();
        let kafka = shop_runtime::kafka::client_config(&settings.kafka_bootstrap_servers);
        // The relay opens its own connections (outside the pool, so API traffic cannot starve
        // it) with the pool's settings; the outbox wakes it after each commit.
        let relay = Relay::new(
            pool.connect_options().as_ref().clone(),
            &kafka,
            observability.relay_config(),
        )?;
        let events = Events {
            outbox: Outbox::new("/shop/payment-service").waking(relay.waker()),
            topic: settings.payment_events_topic.clone(),
            metrics: PaymentMetrics::new(observability.registry()),
        };
        let mut consumer_config =
            observability.consumer_config(&settings.consumer_group, [&settings.order_events_topic]);
        consumer_config.session_timeout = settings.session_timeout;
        consumer_config.retention.window = settings.inbox_retention;
        let admin = AdminApi::new("payment", pool.clone())
            .produces([settings.payment_events_topic.clone()])
            .consumer(&consumer_config)
            .waking(relay.waker());
        let consumer = Consumer::new(
            pool.clone(),
            &kafka,
            consumer_config,
            OrderEvents { events },
        )?;

        let api = PaymentServiceServer::new(PaymentApi { pool: pool.clone() });
        ServiceRunner::new(
            listener,
            Routes::new(api),
            <PaymentServiceServer<PaymentApi> as NamedService>::NAME,
            settings.request_timeout,
            auth,
            shutdown,
        )
        .admin(admin_listener, admin)
        .metrics(metrics_listener, observability, pool.clone())
        .relay(relay)
        .consumer("order events consumer", consumer)
        .run()
        .await
    }
}
