//! What the order process is made of: its API (which prices orders from inventory's catalog),
//! the events it publishes, the saga replies it consumes, the saga deadline's sweeper, and its
//! own token for its calls to inventory. The rest (database, ports, relay, admin API,
//! shutdown) is the skeleton's (`shop_runtime::skeleton`).

use std::time::Duration;

use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_runtime::auth::ServiceToken;
use shop_runtime::config::Identity;
use shop_runtime::skeleton::{self, Api, Prepare, Wiring};
use shop_telemetry::grpc::GrpcMetrics;
use sqlx::migrate::Migrator;

use crate::app::{Backlog, Events, SagaDeadline, sweep_overdue};
use crate::config::Settings;
use crate::inbound::grpc::OrderApi;
use crate::inbound::kafka::SagaReplies;
use crate::metrics::OrderMetrics;
use crate::outbound::inventory::{BreakerSettings, InventoryCatalog};

/// How often the service token's file is read again (its issuer renews it well before expiry).
const TOKEN_REREAD: Duration = Duration::from_secs(30);

/// The order service: the orders and their sagas.
#[derive(Debug)]
pub struct Orders;

/// A built, not yet running, order service.
pub type Application = skeleton::Application<Orders>;

impl skeleton::Service for Orders {
    const MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
    const IDENTITY: Identity = Identity {
        name: "order",
        binary: "order-service",
        database: "orders",
        grpc_port: 50051,
        metrics_port: 9101,
        admin_port: 50061,
    };
    type Settings = Settings;
    /// Its own identity, for its calls to inventory.
    type Prepared = ServiceToken;

    fn wire(settings: Settings, token: ServiceToken, wiring: &mut Wiring) -> anyhow::Result<Api> {
        let events = Events {
            publisher: wiring.publisher(settings.order_events_topic)?,
            metrics: OrderMetrics::new(wiring.registry()),
        };
        wiring.consumer(
            "saga replies consumer",
            [
                settings.inventory_events_topic,
                settings.payment_events_topic,
            ],
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
            GrpcMetrics::client(wiring.registry()),
            token.interceptor(),
        )?;
        wiring.task(
            "saga deadline sweeper",
            sweep_overdue(
                wiring.pool.clone(),
                events.clone(),
                SagaDeadline {
                    deadline: settings.saga_deadline,
                    interval: settings.saga_sweep_interval,
                    batch: settings.saga_sweep_batch,
                },
                wiring.shutdown(),
            ),
        );
        let backlog = Backlog::new(settings.admission);
        wiring.task(
            "saga backlog",
            backlog.clone().watch(
                wiring.pool.clone(),
                settings.backlog_refresh,
                wiring.shutdown(),
            ),
        );
        wiring.task(
            "service token renewal",
            token.keep_fresh(TOKEN_REREAD, wiring.shutdown()),
        );
        Ok(Api::new(OrderServiceServer::new(OrderApi {
            pool: wiring.pool.clone(),
            catalog,
            events,
            backlog,
        })))
    }
}

impl Prepare<Settings> for ServiceToken {
    /// Its calls to inventory carry the order service's own token, never a caller's: a
    /// customer's token does not let inventory tell the shop's pricing call from anything else.
    async fn load(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.service_token_file {
            Some(path) => ServiceToken::from_file(path).await,
            None => anyhow::bail!(
                "ORDER_SERVICE_TOKEN_FILE is not set: the order service needs its own token to call inventory"
            ),
        }
    }
}
