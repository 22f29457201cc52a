//! Compiles the protocol definitions in `proto/` into Rust.
//!
//! `protox` parses the `.proto` files in pure Rust, so building walplayer
//! needs cargo alone: no system `protoc`.

use std::error::Error;

const PROTOS: &[&str] = &[
    "klio/wal/v1/wal.proto",
    "walplayer/control/v1/control.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
