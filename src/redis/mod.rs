//! The Redis bridge to the lab's analytics: RESP codec and client.

pub mod resp;
