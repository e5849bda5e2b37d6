//! What the service calls: its database, inventory's catalog.

pub mod inventory;
pub mod postgres;
