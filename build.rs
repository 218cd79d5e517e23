//! Compiles the istiod CA proto and meshtrace's minimal ADS proto with protox
//! (pure Rust), so `cargo build` needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "istio/v1/auth/ca.proto",
            "envoy/service/discovery/v3/ads.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
