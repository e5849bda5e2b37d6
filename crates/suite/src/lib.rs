//! The shop suite as a whole: clients of the four services, the journey of an order as a
//! customer would follow it, and the audit of the invariants that must hold across the four
//! databases after any run.

pub mod audit;
pub mod clients;
pub mod harness;
pub mod plot;
pub mod processes;
pub mod procstat;
pub mod scrape;
pub mod sweep;
