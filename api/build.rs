//! Generates the discovery and certificate protocols' Rust types (feature `discovery` only;
//! needs `protoc`, from Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    if std::env::var_os("CARGO_FEATURE_DISCOVERY").is_none() {
        return Ok(());
    }
    #[cfg(feature = "discovery")]
    tonic_prost_build::configure()
        .compile_protos(&["proto/portico/discovery/v1/discovery.proto", "proto/portico/ca/v1/ca.proto"], &["proto"])?;
    Ok(())
}
