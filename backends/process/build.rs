//! Compiles `proto/agent.proto` with protox (a pure-Rust protobuf compiler: no system
//! `protoc` is needed) into the agent's tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    let fds = protox::compile(["proto/agent.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
