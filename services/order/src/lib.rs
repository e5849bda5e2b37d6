//! The order service: places and cancels orders and orchestrates the order saga.
//!
//! The saga, all on `order.events.v1` with key = order id unless said otherwise:
//!
//! 1. `PlaceOrder` prices the lines from inventory's catalog (gRPC, deadline, circuit breaker)
//!    and records the order PENDING with `OrderPlaced`.
//! 2. Inventory reserves all lines or none: `StockReserved` → the order emits
//!    `PaymentRequested`; `StockRejected` → CANCELLED (out_of_stock) with `OrderCancelled`.
//! 3. Payment captures or declines: `PaymentCaptured` → CONFIRMED with `OrderConfirmed`;
//!    `PaymentDeclined` → CANCELLED (payment_declined) with `OrderCancelled`.
//! 4. `CancelOrder` → CANCELLED (customer_cancelled) with `OrderCancelled`; inventory releases or
//!    returns the stock, payment refunds a capture.
//!
//! Because every instruction to another service is an order event, all of an order's steps share
//! one partition and are seen by each service in the order they were decided.
//!
//! Modules: `domain` (validation, pricing, statuses), `app` (use cases and saga steps),
//! `inbound` (what calls the service: `grpc`, its API, and `kafka`, the saga replies it
//! consumes), `outbound` (what it calls: `postgres`, its database, and `inventory`, the catalog
//! client), `config`, `startup`.

pub mod app;
pub mod config;
pub mod domain;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod startup;
