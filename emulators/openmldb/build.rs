//! Compiles the emulator's protos (the upstream services' messages it serves) with protox,
//! a pure-Rust protobuf compiler, into a descriptor set the server side decodes requests
//! and encodes answers with.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["nameserver.proto", "tablet.proto", "brpc_meta.proto"],
        ["proto"],
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("openmldb.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&fds))?;
    Ok(())
}
