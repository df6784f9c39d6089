//! Compiles `proto/inference.proto` (serval's Open Inference Protocol service) with the `protoc`
//! shipped in the `protoc-bin-vendored` crate: nothing is downloaded at build time and nothing
//! needs to be installed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Tensor bytes stay slices of the received message (no copy per input).
        .bytes(".")
        .compile_with_config(config, &["proto/inference.proto"], &["proto"])?;
    Ok(())
}
