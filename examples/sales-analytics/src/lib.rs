//! A worked example of a new subscriber to the shop suite's events, built only on the public
//! SDK (`shop-eventing`, `shop-proto`, `shop-runtime`): it keeps revenue and units per sku from
//! `order.events.v1` in a database of its own and serves the consumer's metrics on `/metrics`.
//!
//! - [`handler`]: the subscriber's logic, the only part specific to it;
//! - [`config`]: its settings (environment variables);
//! - [`startup`]: database, consumer and `/metrics`, wired with the SDK;
//! - [`report`]: the figures, as `sales-analytics report` prints them.
//!
//! The guide that walks through it: `docs/subscribing.md`.

pub mod config;
pub mod handler;
pub mod report;
pub mod startup;
