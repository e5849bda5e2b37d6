use shop_runtime::config::{self, ConfigError, ServiceSettings};

use crate::startup::Inventory;
use shop_runtime::skeleton::Service as _;

/// Settings of the inventory service, from environment variables: those of every service
/// ([`ServiceSettings`], prefix `INVENTORY`), and (defaults in brackets):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `ORDER_EVENTS_TOPIC` | consumed [`order.events.v1`] |
/// | `INVENTORY_EVENTS_TOPIC` | produced [`inventory.events.v1`] |
#[derive(Clone, Debug)]
pub struct Settings {
    pub service: ServiceSettings,
    pub order_events_topic: String,
    pub inventory_events_topic: String,
}

impl Settings {
    /// For a test: [`ServiceSettings::for_test`] and the suite's topic names.
    pub fn for_test(service: ServiceSettings) -> Self {
        Self {
            service,
            order_events_topic: shop_proto::topics::ORDER_EVENTS.to_owned(),
            inventory_events_topic: shop_proto::topics::INVENTORY_EVENTS.to_owned(),
        }
    }
}

impl config::Settings for Settings {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(&Inventory::IDENTITY)?,
            order_events_topic: config::topics::order_events(),
            inventory_events_topic: config::topics::inventory_events(),
        })
    }

    fn service(&self) -> &ServiceSettings {
        &self.service
    }
}
