//! charmander-scheduler: a Mesos framework (v1 scheduler HTTP API) for the
//! Charmander scheduling lab, plus `sim`, a simulated Mesos master for tests and
//! demos. See ARCHITECTURE.md for the code map.
//!
//! `start` wires the threads together; `main.rs` and the integration tests
//! both use it, so the tests run exactly the production wiring.

#![forbid(unsafe_code)]

pub mod config;
pub mod mesos;
pub mod redis;
pub mod scheduler;
