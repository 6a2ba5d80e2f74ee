//! The Apache Pegasus backend of rollout: the "thrift over rDSN" protocol its servers speak,
//! a client for the meta servers, and `PegasusCluster` (the core traits over a real cluster).
//! Its emulator, to try it against, is the `rollout-emulator-pegasus` crate.
//!
//! Facts about the wire format and the RPCs are summarized in docs/pegasus-wire.md, checked
//! against Pegasus's IDL (`idl/*.thrift` of apache/incubator-pegasus).
//!
//! - [`thrift`]: the binary protocol, a writer and a reader that never panics on any input;
//! - [`types`]: rDSN's special types (`error_code`, `gpid`, `rpc_address`, `host_port`),
//!   declared as structs but encoded raw;
//! - [`frame`]: the 48-byte v0 request header, request bodies, response frames;
//! - [`messages`]: the request and response structs of the meta and replica RPCs;
//! - [`transport`]: one pipelined TCP connection per server, with deadlines;
//! - [`meta`]: [`MetaClient`](meta::MetaClient), leader discovery and remote commands;
//! - [`rrdb`] and [`client`]: the data path (put, get, remove, ttl) and a small client of
//!   one table that measures what clients see;
//! - [`ini`]: the `config.ini` editor that keeps every byte but the value it sets;
//! - [`PegasusCluster`]: the core traits over the meta servers, processes reached through a
//!   [`NodeFactory`].
#![cfg_attr(docsrs, feature(doc_cfg))]

mod answers;
pub mod client;
mod cluster;
mod drain;
mod error;
pub mod frame;
mod knobs;
pub use rollout_core::conf::ini;
pub mod messages;
pub mod meta;
pub mod rrdb;
mod servers;
mod snapshot;
mod steps;
pub mod thrift;
pub mod transport;
pub mod types;
pub mod version;

pub use cluster::{NodeFactory, PegasusCluster, PegasusNode, Timing};
pub use error::PegasusError;
pub use version::ServerVersion;
