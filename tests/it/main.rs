//! Integration tests: real sockets on port 0, the real scheduler wiring
//! (`charmander::start`) against `mesos-sim`.

mod durability;
mod mesos_client;
mod redis_bridge;
mod scheduling;
mod sim_master;
mod support;
