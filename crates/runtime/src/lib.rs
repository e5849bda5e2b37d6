//! What every service process of the shop suite shares, so each service's `startup` is about
//! its domain only:
//!
//! - [`admin`]: the admin gRPC API (dead letters, the outbox) every service serves for
//!   operators on a port of its own;
//! - [`auth`]: bearer tokens (JWT) checked on every gRPC call, the typed [`auth::Caller`] with
//!   its authorisation helpers, and the token a service presents to the services it calls;
//! - [`config`]: typed settings from environment variables, with errors that name the variable;
//! - [`status`]: `tonic::Status` values with `google.rpc` error details (field violations,
//!   precondition failures, retry info) that grpcurl and every gRPC client can decode, the
//!   one builder of field violations every service validates requests with, and
//!   [`status::ServiceError`], the one error type of the services' use cases, mapped to a
//!   status in one place;
//! - [`page_token`]: the page tokens of every listing, checked before they reach SQL;
//! - [`grpc`]: the gRPC server with `grpc.health.v1` and server reflection (v1 and v1alpha), that
//!   turns NOT_SERVING and drains on shutdown;
//! - [`database`]: connecting a pool, waiting for the server to come up;
//! - [`kafka`]: the Kafka client configuration, with the security properties of the environment;
//! - [`observability`]: the service's Prometheus registry and its `/metrics` endpoint;
//! - [`shutdown`]: a token cancelled on SIGTERM or Ctrl-C;
//! - [`service`]: opening a service's database and running its gRPC server and tasks together;
//! - [`skeleton`]: the one skeleton of every service process ([`skeleton::Service`],
//!   [`skeleton::Application`]): a service declares its settings, migrations and parts, the
//!   skeleton builds and runs the rest.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod config;
pub mod database;
pub mod grpc;
pub mod kafka;
pub mod observability;
pub mod page_token;
pub mod service;
pub mod shutdown;
pub mod skeleton;
pub mod status;
pub mod tasks;
