//! `rollout`: see the crate docs of `rollout_cli`.

/// The simulator allocates and frees a replica's log and event per write; mimalloc does that
/// about a quarter faster than the system allocator at 100,000 partitions
/// (docs/benchmarks.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rollout_cli::main_with(std::env::args_os())
}
