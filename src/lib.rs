//! charmander-scheduler: a Mesos framework (v1 scheduler HTTP API) for the
//! Charmander scheduling lab, plus `sim`, a simulated Mesos master for tests and
//! demos. See ARCHITECTURE.md for the code map.

#![forbid(unsafe_code)]

pub mod mesos;
pub mod scheduler;
