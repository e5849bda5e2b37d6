//! What the payment process is made of: its API, the events it publishes and the order
//! events it consumes. The rest (database, ports, relay, admin API, shutdown) is the
//! skeleton's (`shop_runtime::skeleton`).

use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;
use shop_runtime::config::Identity;
use shop_runtime::skeleton::{self, Api, Wiring};
use sqlx::migrate::Migrator;

use crate::app::Events;
use crate::config::Settings;
use crate::inbound::grpc::PaymentApi;
use crate::inbound::kafka::OrderEvents;
use crate::metrics::PaymentMetrics;

/// The payment service: the customers' accounts and their payments.
#[derive(Debug)]
pub struct Payments;

/// A built, not yet running, payment service.
pub type Application = skeleton::Application<Payments>;

impl skeleton::Service for Payments {
    const MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
    const IDENTITY: Identity = Identity {
        name: "payment",
        binary: "payment-service",
        database: "payment",
        grpc_port: 50053,
        metrics_port: 9103,
        admin_port: 50063,
    };
    type Settings = Settings;
    type Prepared = ();

    fn wire(settings: Settings, (): (), wiring: &mut Wiring) -> anyhow::Result<Api> {
        let events = Events {
            publisher: wiring.publisher(settings.payment_events_topic)?,
            metrics: PaymentMetrics::new(wiring.registry()),
        };
        wiring.consumer(
            "order events consumer",
            [settings.order_events_topic],
            OrderEvents { events },
        )?;
        Ok(Api::new(PaymentServiceServer::new(PaymentApi {
            pool: wiring.pool.clone(),
        })))
    }
}
