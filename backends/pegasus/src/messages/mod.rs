//! The request and response structs of the meta and replica server RPCs rollout uses, with
//! their field ids from Pegasus's IDL (`idl/dsn.layer2.thrift`, `idl/meta_admin.thrift`,
//! `idl/replica_admin.thrift`, `idl/metadata.thrift`, `idl/command.thrift`; listed in
//! docs/pegasus-wire.md). Enums travel as i32. Unknown fields are skipped, so a
//! newer server's additions do not break the client; a known field with another type is an
//! error naming it. Every field of a special type (declared STRUCT, encoded raw) that the
//! IDL has is decoded by name, since no generic skip can cross one.

use crate::thrift::{DecodeError, Reader, Type, Writer, expect};
use crate::types::ErrorCode;

/// A thrift struct this crate reads and writes.
pub trait Message: Sized {
    /// The struct's IDL name, for errors.
    const NAME: &'static str;

    /// Writes the fields (not the STOP).
    fn write(&self, w: &mut Writer);

    /// Reads the fields up to and including the STOP.
    ///
    /// # Errors
    /// A malformed struct.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// The struct as bytes, with its STOP.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.stop();
        w.into_bytes()
    }

    /// The struct from bytes.
    ///
    /// # Errors
    /// A malformed struct.
    fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(b))
    }
}

/// RPC codes and their meaning (pegasus.md §3).
pub mod rpc {
    /// `configuration_list_nodes_request` → `configuration_list_nodes_response`.
    pub const LIST_NODES: &str = "RPC_CM_LIST_NODES";
    /// `configuration_list_apps_request` → `configuration_list_apps_response`.
    pub const LIST_APPS: &str = "RPC_CM_LIST_APPS";
    /// `query_cfg_request` → `query_cfg_response`; a standby names the leader.
    pub const QUERY_CONFIG: &str = "RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX";
    /// An empty request → `configuration_cluster_info_response`.
    pub const CLUSTER_INFO: &str = "RPC_CM_CLUSTER_INFO";
    /// `configuration_meta_control_request` → `configuration_meta_control_response`.
    pub const CONTROL_META: &str = "RPC_CM_CONTROL_META";
    /// `configuration_balancer_request` → `configuration_balancer_response`.
    pub const PROPOSE_BALANCER: &str = "RPC_CM_PROPOSE_BALANCER";
    /// `query_replica_info_request` → `query_replica_info_response` (replica servers).
    pub const QUERY_REPLICA_INFO: &str = "RPC_QUERY_REPLICA_INFO";
    /// `command` → a string (any server).
    pub const CLI: &str = "RPC_CLI_CLI_CALL";
}

/// `node_status` values.
pub mod node_status {
    /// Every node (a filter).
    pub const INVALID: i32 = 0;
    /// Alive.
    pub const ALIVE: i32 = 1;
    /// Not alive.
    pub const UNALIVE: i32 = 2;
}

/// `app_status` values.
pub mod app_status {
    /// Every app (a filter).
    pub const INVALID: i32 = 0;
    /// Available.
    pub const AVAILABLE: i32 = 1;
}

/// `meta_function_level` values.
pub mod meta_level {
    /// Nothing runs.
    pub const STOPPED: i32 = 100;
    /// DDL only.
    pub const BLIND: i32 = 200;
    /// DDL and downgrading dead primaries.
    pub const FREEZED: i32 = 300;
    /// No balancer.
    pub const STEADY: i32 = 400;
    /// The full balancer.
    pub const LIVELY: i32 = 500;
    /// Asks for the level without changing it.
    pub const INVALID: i32 = 10000;

    /// The shell's name of a level.
    pub fn name(level: i32) -> Option<&'static str> {
        Some(match level {
            STOPPED => "stopped",
            BLIND => "blind",
            FREEZED => "freezed",
            STEADY => "steady",
            LIVELY => "lively",
            _ => return None,
        })
    }

    /// The level of a shell name.
    pub fn parse(name: &str) -> Option<i32> {
        Some(match name {
            "stopped" => STOPPED,
            "blind" => BLIND,
            "freezed" => FREEZED,
            "steady" => STEADY,
            "lively" => LIVELY,
            _ => return None,
        })
    }
}

/// `config_type` values used in proposals.
pub mod config_type {
    /// Make the target primary (with `balancer_request_type` move_primary).
    pub const UPGRADE_TO_PRIMARY: i32 = 2;
    /// Demote the primary to secondary.
    pub const DOWNGRADE_TO_SECONDARY: i32 = 5;
    /// Drop a secondary out of the partition.
    pub const DOWNGRADE_TO_INACTIVE: i32 = 6;
}

/// `partition_status` values.
pub mod partition_status {
    /// Not a member (dropped, or closed).
    pub const INACTIVE: i32 = 1;
    /// Primary.
    pub const PRIMARY: i32 = 3;
    /// Secondary.
    pub const SECONDARY: i32 = 4;
    /// Learning.
    pub const POTENTIAL_SECONDARY: i32 = 5;
}

pub(crate) fn list<T>(
    r: &mut Reader<'_>,
    within: &'static str,
    id: i16,
    elem: Type,
    mut f: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let (t, n) = r.list()?;
    if n > 0 {
        expect(within, id, elem, t)?;
    }
    (0..n).map(|_| f(r)).collect()
}

pub(crate) fn write_list<T>(
    w: &mut Writer,
    id: i16,
    elem: Type,
    items: &[T],
    f: impl Fn(&mut Writer, &T),
) {
    w.field(Type::List, id);
    w.list(elem, items.len());
    for i in items {
        f(w, i);
    }
}

/// Reads a struct's fields: `on(reader, type, id)` handles a known field and returns
/// `false` for an unknown one, which is skipped.
pub(crate) fn fields(
    r: &mut Reader<'_>,
    mut on: impl FnMut(&mut Reader<'_>, Type, i16) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    while let Some((ty, id)) = r.field()? {
        if !on(r, ty, id)? {
            r.skip(ty)?;
        }
    }
    Ok(())
}

/// Checks the type of known field `id` and reads it.
macro_rules! field {
    ($r:ident, $ty:ident, $id:ident, $within:expr, $want:expr, $read:expr) => {{
        expect($within, $id, $want, $ty)?;
        $read
    }};
}

pub(crate) fn write_err(w: &mut Writer, err: Option<&ErrorCode>) {
    if let Some(e) = err {
        w.field(Type::Struct, 1);
        e.write(w);
    }
}

mod admin;
mod config;
mod replica;

pub use admin::{
    BalancerRequest, ClusterInfoResponse, Command, Empty, ErrResponse, I32Request, I32Response,
    ListResponse, NodeInfo, ProposalAction,
};
pub use config::{AppInfo, PartitionConfiguration, QueryConfigRequest, QueryConfigResponse};
pub use replica::{QueryReplicaInfoRequest, QueryReplicaInfoResponse};
