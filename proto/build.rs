//! Compiles the .proto files with protox (pure Rust, no system protoc) and generates
//! prost messages and tonic clients/servers. Generated code lands in OUT_DIR and is never committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/starling/v1/starling.proto",
        "proto/starling/peer/v1/peer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
