pub mod grpc;
pub mod kafka;
pub mod postgres;
