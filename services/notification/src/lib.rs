//! The notification service: tells customers the outcome of their orders.
//!
//! - `domain`: notification kinds and statuses, the messages, money formatting, page tokens and
//!   the retry decision (no I/O);
//! - `app`: use cases (recording a notification in the consumer's transaction, listing them),
//!   the `Channel` port and the delivery worker that claims due notifications and delivers them
//!   with retries, apart from consumption;
//! - `adapters::grpc`: the `NotificationService` API and the mapping of errors to gRPC statuses;
//! - `adapters::postgres`: the SQL;
//! - `adapters::kafka`: which order event causes which notification;
//! - `adapters::channels`: the delivery channels (`log`, `webhook`);
//! - `config` and `startup`: settings from the environment and the running process.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod startup;
