//! What calls the service: its gRPC API, and the events it consumes.

pub mod grpc;
pub mod kafka;
