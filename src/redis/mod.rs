//! The Redis bridge to the lab's analytics: RESP codec and client.

pub mod client;
pub mod resp;
pub mod sync;
