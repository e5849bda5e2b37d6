//! What the service calls: its database, the delivery channels.

pub mod channels;
pub mod postgres;
