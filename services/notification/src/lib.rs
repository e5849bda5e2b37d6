//! The notification service: tells customers the outcome of their orders.
//!
//! - `domain`: notification kinds and statuses, the messages, money formatting, page tokens and
//!   the retry decision (no I/O);
//! - `app`: use cases (recording a notification in the consumer's transaction, listing them),
//!   the `Channel` port and the delivery worker that claims due notifications and delivers them
//!   with retries, apart from consumption;
//! - `inbound::grpc`: the `NotificationService` API and the mapping of errors to gRPC statuses;
//! - `outbound::postgres`: the SQL;
//! - `inbound::kafka`: which order event causes which notification;
//! - `outbound::channels`: the delivery channels (`log`, `webhook`);
//! - `config` and `startup`: settings from the environment and the running process.

pub mod app;
pub mod config;
pub mod domain;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod startup;
