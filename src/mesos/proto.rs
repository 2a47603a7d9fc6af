//! Generated protobuf types for the `mesos.v1` subset in `proto/`.

include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
