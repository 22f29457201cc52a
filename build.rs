//! Compiles the protocol definitions in `proto/` into Rust; the
//! `walplayer-proto` crate (`proto/Cargo.toml`) is the one that runs it.
//!
//! `protox` parses the `.proto` files in pure Rust, so building walplayer
//! needs cargo alone: no system `protoc`.

use std::error::Error;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "klio/wal/v1/wal.proto",
    "walplayer/control/v1/control.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    // The proto crate's own directory holds the .proto tree.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .bytes(".")
        // Keeps every CoordinatorMessage small; few assignments carry one.
        .boxed(".walplayer.control.v1.Assignment.simulate")
        .boxed(".walplayer.control.v1.Finished.simulation")
        .compile_fds(descriptors)?;
    Ok(())
}
