//! Generates Rust types for the Mesos v1 protobuf subset in `proto/` with
//! rust-protobuf's pure-Rust parser, so the build needs no `protoc`; and
//! names, once, the targets whose libc ABI the FFI modules (`rlimit`,
//! `signals`) are written for.

fn main() {
    // Without these, cargo re-runs the script (and rebuilds the crate) when
    // any file of the package changes, README and scripts included.
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=proto");
    // `linux_ffi`: 64-bit Linux, glibc and musl alike, where `rlim_t` is a
    // u64, `sigset_t` fits 128 bytes and the resource and signal numbers are
    // the common ones. MIPS, SPARC and Alpha differ and get the fallbacks.
    println!("cargo::rustc-check-cfg=cfg(linux_ffi)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let arches = [
        "x86_64",
        "aarch64",
        "riscv64",
        "powerpc64",
        "s390x",
        "loongarch64",
    ];
    if os == "linux" && width == "64" && arches.contains(&arch.as_str()) {
        println!("cargo::rustc-cfg=linux_ffi");
    }
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/mesos/v1/mesos.proto")
        .input("proto/mesos/v1/scheduler/scheduler.proto")
        .cargo_out_dir("proto")
        .run_from_script();
}
