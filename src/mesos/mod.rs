//! Everything that speaks the Mesos v1 scheduler API.

pub mod proto;
pub mod recordio;
