//! Generates Rust types for the Mesos v1 protobuf subset in `proto/` with
//! rust-protobuf's pure-Rust parser, so the build needs no `protoc`.

fn main() {
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/mesos/v1/mesos.proto")
        .input("proto/mesos/v1/scheduler/scheduler.proto")
        .cargo_out_dir("proto")
        .run_from_script();
}
