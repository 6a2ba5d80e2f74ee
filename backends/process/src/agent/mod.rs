//! The node agent: a daemon per host ([`serve`], the `rollout-agent` binary) that an
//! orchestrator calls over gRPC to stop, start, report on, reconfigure and revert the
//! components its own config file lists ([`AgentConfig`]), and [`AgentNode`], the
//! [`rollout_core::Node`] that calls it.
//!
//! What it will do is bounded by its config file, not by the caller: it runs only each
//! component's configured start and stop commands (through a local [`CommandNode`]), edits
//! only the files listed in its `config_files` under its deploy dir (a `..` or a symbolic
//! link that leads out is refused), and every call must carry `authorization: Bearer
//! <token>`, compared in constant time. TLS (rustls) is on when the config names a
//! certificate and key. An operation on a component is exclusive: a second one while the
//! first runs is refused (`FAILED_PRECONDITION`), and a stop or start goes on to its end
//! when its caller disconnects. Every call, a refused one too, is recorded with its caller's
//! address, the component, the action and its result (the config's `audit_log`).
//!
//! Under systemd, `rollout-agent.service` (beside this crate's `Cargo.toml`) runs it with
//! `KillMode=process`: stopping or restarting the agent never stops the databases it started.
//!
//! The protocol is `proto/agent.proto` (package `rollout.agent.v1`), compiled at build time
//! by protox, with no system `protoc`.
//!
//! [`CommandNode`]: crate::CommandNode

mod audit;
mod client;
mod config;
mod server;

/// The generated protocol types, client and server (`proto/agent.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("rollout.agent.v1");
}

pub use client::{AgentEndpoint, AgentNode};
pub use config::{AgentConfig, TlsFiles};
pub(crate) use config::{read_file, read_token};
pub use server::{AgentService, serve, serve_on};
