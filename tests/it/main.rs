//! Integration tests: real sockets on port 0, the real scheduler wiring
//! (`charmander::start`) against `mesos-sim`.

#[path = "../common/fault_proxy.rs"]
mod fault_proxy;

mod bad_master;
mod bad_redis;
mod calls;
mod disk_full;
mod durability;
mod events;
mod failover;
mod fuzz;
mod graceful;
mod hostile;
mod lab_api;
mod lab_scripts;
mod mesos_client;
mod metrics;
mod outcomes;
mod redis_bridge;
mod restart_policy;
mod scheduling;
mod security;
mod sim_master;
mod support;
mod task_list;
