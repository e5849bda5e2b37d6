//! The inventory service: the product catalog and its stock.
//!
//! - `domain`: skus, names, prices and the all-or-nothing reservation rule (no I/O);
//! - `app`: use cases (catalog RPCs) and saga steps (reserve, sell, release), each one database
//!   transaction that also appends the resulting event to the outbox;
//! - `inbound::grpc`: the `InventoryService` API and the mapping of errors to gRPC statuses;
//! - `outbound::postgres`: the SQL;
//! - `inbound::kafka`: which order event triggers which saga step;
//! - `config` and `startup`: settings from the environment and the running process.

pub mod app;
pub mod config;
pub mod domain;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod startup;
