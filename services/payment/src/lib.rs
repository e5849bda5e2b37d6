//! The payment service: customer accounts and the payments of the order saga.
//!
//! - `domain`: ids, currencies, amounts and the capture-or-decline rule (no I/O);
//! - `app`: use cases (account RPCs) and saga steps (capture, refund), each one database
//!   transaction that also appends the resulting event to the outbox;
//! - `inbound::grpc`: the `PaymentService` API and the mapping of errors to gRPC statuses;
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
