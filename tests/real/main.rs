//! Integration tests against a real Apache Mesos 1.11.0 master and agent
//! (`../shared/realmesos`, see its README): each test starts its own local
//! cluster on its own port, runs the real `charmander-scheduler` binary
//! against it and checks what really happened through the master's endpoints
//! and the fake docker's `runs.log`. Without `REALMESOS_DIR` every test prints
//! a skip line and passes (a dev box without Mesos); `scripts/test` sets it.

#[path = "../common/fault_proxy.rs"]
mod fault_proxy;
#[path = "../common/http.rs"]
mod http;

mod agents;
mod faults;
mod harness;
mod restarts;
mod roles;
mod seed;

/// Each test's cluster port (the suite owns 5150-5299).
const PORT_SEED: u16 = 5151;
const PORT_SCHEDULER_RESTART: u16 = 5152;
const PORT_CLUSTER_RESTART: u16 = 5153;
const PORT_TWO_AGENTS: u16 = 5154;
const PORT_NO_NODENAME: u16 = 5155;
const PORT_OUTAGE: u16 = 5156;
const PORT_FAILOVER: u16 = 5157;
const PORT_LOST_ACCEPT: u16 = 5158;
const PORT_RESERVED: u16 = 5159;
const PORT_MASTER_LIST: u16 = 5160;
const PORT_PRIVILEGED: u16 = 5170;
const PORT_BURST: u16 = 5171;
