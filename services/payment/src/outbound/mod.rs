//! What the service calls: its database.

pub mod postgres;
