//! Building and running the order process: database, migrations, gRPC listener, relay, saga
//! replies consumer and the saga deadline's sweeper.

use std::net::SocketAddr;

use shop_eventing::{Consumer, Outbox, Relay};
use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_runtime::admin::AdminApi;
use shop_runtime::auth::{Authenticator, ServiceToken};
use shop_runtime::observability::Observability;
use shop_runtime::service::{Bound, Ports, ServiceRunner};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::adapters::grpc::OrderApi;
use crate::adapters::inventory::{BreakerSettings, InventoryCatalog};
use crate::adapters::kafka::SagaReplies;
use crate::app::{Events, SagaDeadline, sweep_overdue};
use crate::config::Settings;
use crate::metrics::OrderMetrics;
use shop_telemetry::grpc::GrpcMetrics;

/// How often the service token's file is read again (its issuer renews it well before expiry).
const TOKEN_REREAD: std::time::Duration = std::time::Duration::from_secs(30);

/// The service's own schema (the eventing tables come with `shop_eventing::migrate`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A built, not yet running, order service.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    bound: Bound,
    auth: Authenticator,
    /// Its own identity, for its calls to inventory.
    token: ServiceToken,
}

impl Application {
    /// Connects to the database (waiting for it), migrates it and binds the gRPC port.
    ///
    /// # Errors
    /// When the token keys or the service's own token cannot be read, the database stays unreachable, a migration fails or the port is taken.
    pub async fn build(settings: Settings, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        // First: without its callers' keys the service could serve nobody.
        let auth = Authenticator::load(&settings.auth).await?;
        // Its calls to inventory carry the order service's own token, never a caller's: a
        // customer's token does not let inventory tell the shop's pricing call from anything else.
        let token = match &settings.service_token_file {
            Some(path) => ServiceToken::from_file(path).await?,
            None => anyhow::bail!(
                "ORDER_SERVICE_TOKEN_FILE is not set: the order service needs its own token to call inventory"
            ),
        };
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
            token,
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
            token,
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
            outbox: Outbox::new("/shop/order-service").waking(relay.waker()),
            topic: settings.order_events_topic.clone(),
            metrics: OrderMetrics::new(observability.registry()),
        };
        let mut consumer_config = observability.consumer_config(
            &settings.consumer_group,
            [
                &settings.inventory_events_topic,
                &settings.payment_events_topic,
            ],
        );
        consumer_config.session_timeout = settings.session_timeout;
        consumer_config.retention.window = settings.inbox_retention;
        let admin = AdminApi::new("order", pool.clone())
            .produces([settings.order_events_topic.clone()])
            .consumer(&consumer_config)
            .waking(relay.waker());
        let consumer = Consumer::new(
            pool.clone(),
            &kafka,
            consumer_config,
            SagaReplies {
                events: events.clone(),
            },
        )?;
        let catalog = InventoryCatalog::new(
            &settings.inventory_url,
            settings.inventory_deadline,
            BreakerSettings {
                failure_threshold: settings.breaker_failures,
                open_for: settings.breaker_open_for,
            },
            GrpcMetrics::client(observability.registry()),
            token.interceptor(),
        )?;

        let token_shutdown = shutdown.clone();
        let sweeper = sweep_overdue(
            pool.clone(),
            events.clone(),
            SagaDeadline {
                deadline: settings.saga_deadline,
                interval: settings.saga_sweep_interval,
                batch: settings.saga_sweep_batch,
            },
            shutdown.clone(),
        );
        let api = OrderServiceServer::new(OrderApi {
            pool: pool.clone(),
            catalog,
            events,
        });
        ServiceRunner::new(
            listener,
            Routes::new(api),
            <OrderServiceServer<OrderApi> as NamedService>::NAME,
            settings.request_timeout,
            auth,
            shutdown,
        )
        .admin(admin_listener, admin)
        .metrics(metrics_listener, observability, pool.clone())
        .relay(relay)
        .consumer("saga replies consumer", consumer)
        .task("saga deadline sweeper", sweeper)
        .task(
            "service token renewal",
            token.keep_fresh(TOKEN_REREAD, token_shutdown),
        )
        .run()
        .await
    }
}
