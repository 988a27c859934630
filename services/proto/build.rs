//! Generates the API types from `protos/` with protox (pure Rust: no system `protoc`).
//! The encoded descriptor set is written next to the code for gRPC reflection.

use std::path::PathBuf;

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs (not compiled in): Bazel runs it in another sandbox.
    let protos = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../protos");
    let proto = protos.join("setpoint/v1/setpoint.proto");
    println!("cargo:rerun-if-changed={}", protos.display());

    let descriptors = protox::compile([&proto], [&protos])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("setpoint_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec1K")
        .compile_fds(descriptors)?;
    Ok(())
}
