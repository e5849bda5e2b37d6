//! What the inventory process is made of: its API, the events it publishes and the order
//! events it consumes. The rest (database, ports, relay, admin API, shutdown) is the
//! skeleton's (`shop_runtime::skeleton`).

use shop_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use shop_runtime::config::Identity;
use shop_runtime::skeleton::{self, Api, Wiring};
use sqlx::migrate::Migrator;

use crate::app::Events;
use crate::config::Settings;
use crate::inbound::grpc::InventoryApi;
use crate::inbound::kafka::OrderEvents;
use crate::metrics::InventoryMetrics;

/// The inventory service: the catalog and its stock.
#[derive(Debug)]
pub struct Inventory;

/// A built, not yet running, inventory service.
pub type Application = skeleton::Application<Inventory>;

impl skeleton::Service for Inventory {
    const MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
    const IDENTITY: Identity = Identity {
        name: "inventory",
        binary: "inventory-service",
        database: "inventory",
        grpc_port: 50052,
        metrics_port: 9102,
        admin_port: 50062,
    };
    type Settings = Settings;
    type Prepared = ();

    fn wire(settings: Settings, (): (), wiring: &mut Wiring) -> anyhow::Result<Api> {
        let events = Events {
            publisher: wiring.publisher(settings.inventory_events_topic)?,
            metrics: InventoryMetrics::new(wiring.registry()),
        };
        wiring.consumer(
            "order events consumer",
            [settings.order_events_topic],
            OrderEvents { events },
        )?;
        Ok(Api::new(InventoryServiceServer::new(InventoryApi {
            pool: wiring.pool.clone(),
        })))
    }
}
