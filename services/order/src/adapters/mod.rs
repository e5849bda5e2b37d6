pub mod grpc;
pub mod inventory;
pub mod kafka;
pub mod postgres;
