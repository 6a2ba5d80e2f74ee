//! The request and response structs of the meta and replica server RPCs rollout uses, with
//! their field ids from Pegasus's IDL (`idl/dsn.layer2.thrift`, `idl/meta_admin.thrift`,
//! `idl/replica_admin.thrift`, `idl/metadata.thrift`, `idl/command.thrift`; listed in
//! shared/reference/pegasus.md §3.2). Enums travel as i32. Unknown fields are skipped, so a
//! newer server's additions do not break the client; a known field with another type is an
//! error naming it. Every field of a special type (declared STRUCT, encoded raw) that the
//! IDL has is decoded by name, since no generic skip can cross one.

use crate::thrift::{DecodeError, Reader, Type, Writer, expect};
use crate::types::{ErrorCode, Gpid, HostPort, RpcAddress};

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

fn list<T>(
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

fn write_list<T>(w: &mut Writer, id: i16, elem: Type, items: &[T], f: impl Fn(&mut Writer, &T)) {
    w.field(Type::List, id);
    w.list(elem, items.len());
    for i in items {
        f(w, i);
    }
}

/// Reads a struct's fields: `on(reader, type, id)` handles a known field and returns
/// `false` for an unknown one, which is skipped.
fn fields(
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

/// `partition_configuration` (dsn.layer2.thrift).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionConfiguration {
    /// 1: the partition.
    pub pid: Gpid,
    /// 2: its ballot.
    pub ballot: i64,
    /// 3: replicas wanted.
    pub max_replica_count: i32,
    /// 4: the primary, or none.
    pub primary: RpcAddress,
    /// 5: the secondaries.
    pub secondaries: Vec<RpcAddress>,
    /// 6: the last dropped replicas.
    pub last_drops: Vec<RpcAddress>,
    /// 7: the last committed decree.
    pub last_committed_decree: i64,
    /// 8: flags.
    pub partition_flags: i32,
    /// 9: the primary as host and port (2.6+).
    pub hp_primary: Option<HostPort>,
    /// 10: the secondaries as hosts and ports (2.6+).
    pub hp_secondaries: Option<Vec<HostPort>>,
    /// 11: the last drops as hosts and ports (2.6+).
    pub hp_last_drops: Option<Vec<HostPort>>,
}

impl Message for PartitionConfiguration {
    const NAME: &'static str = "partition_configuration";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.pid.write(w);
        w.field(Type::I64, 2);
        w.i64(self.ballot);
        w.field(Type::I32, 3);
        w.i32(self.max_replica_count);
        w.field(Type::Struct, 4);
        self.primary.write(w);
        write_list(w, 5, Type::Struct, &self.secondaries, |w, a| a.write(w));
        write_list(w, 6, Type::Struct, &self.last_drops, |w, a| a.write(w));
        w.field(Type::I64, 7);
        w.i64(self.last_committed_decree);
        w.field(Type::I32, 8);
        w.i32(self.partition_flags);
        if let Some(hp) = &self.hp_primary {
            w.field(Type::Struct, 9);
            hp.write(w);
        }
        if let Some(hps) = &self.hp_secondaries {
            write_list(w, 10, Type::Struct, hps, |w, h| h.write(w));
        }
        if let Some(hps) = &self.hp_last_drops {
            write_list(w, 11, Type::Struct, hps, |w, h| h.write(w));
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.pid = field!(r, ty, id, n, Type::Struct, Gpid::read(r)?),
                2 => m.ballot = field!(r, ty, id, n, Type::I64, r.i64()?),
                3 => m.max_replica_count = field!(r, ty, id, n, Type::I32, r.i32()?),
                4 => m.primary = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                5 => {
                    expect(n, id, Type::List, ty)?;
                    m.secondaries = list(r, n, id, Type::Struct, RpcAddress::read)?;
                }
                6 => {
                    expect(n, id, Type::List, ty)?;
                    m.last_drops = list(r, n, id, Type::Struct, RpcAddress::read)?;
                }
                7 => m.last_committed_decree = field!(r, ty, id, n, Type::I64, r.i64()?),
                8 => m.partition_flags = field!(r, ty, id, n, Type::I32, r.i32()?),
                9 => m.hp_primary = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                10 | 11 => {
                    expect(n, id, Type::List, ty)?;
                    let hps = Some(list(r, n, id, Type::Struct, HostPort::read)?);
                    if id == 10 {
                        m.hp_secondaries = hps;
                    } else {
                        m.hp_last_drops = hps;
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `query_cfg_request`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryConfigRequest {
    /// 1: the app's name.
    pub app_name: String,
    /// 2: the partitions wanted; empty for all.
    pub partition_indices: Vec<i32>,
}

impl Message for QueryConfigRequest {
    const NAME: &'static str = "query_cfg_request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::String, 1);
        w.string(&self.app_name);
        write_list(w, 2, Type::I32, &self.partition_indices, |w, i| w.i32(*i));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.app_name = field!(r, ty, id, n, Type::String, r.string()?),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.partition_indices = list(r, n, id, Type::I32, |r| r.i32())?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `query_cfg_response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryConfigResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the app id.
    pub app_id: i32,
    /// 3: its partition count.
    pub partition_count: i32,
    /// 4: whether it is stateful.
    pub is_stateful: bool,
    /// 5: the configurations asked for (on `ERR_FORWARD_TO_OTHERS`, the leader as the first
    /// one's primary).
    pub partitions: Vec<PartitionConfiguration>,
}

impl Message for QueryConfigResponse {
    const NAME: &'static str = "query_cfg_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        w.field(Type::I32, 2);
        w.i32(self.app_id);
        w.field(Type::I32, 3);
        w.i32(self.partition_count);
        w.field(Type::Bool, 4);
        w.bool(self.is_stateful);
        write_list(w, 5, Type::Struct, &self.partitions, |w, p| {
            p.write(w);
            w.stop();
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => m.app_id = field!(r, ty, id, n, Type::I32, r.i32()?),
                3 => m.partition_count = field!(r, ty, id, n, Type::I32, r.i32()?),
                4 => m.is_stateful = field!(r, ty, id, n, Type::Bool, r.bool()?),
                5 => {
                    expect(n, id, Type::List, ty)?;
                    m.partitions = list(r, n, id, Type::Struct, PartitionConfiguration::read)?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

fn write_err(w: &mut Writer, err: Option<&ErrorCode>) {
    if let Some(e) = err {
        w.field(Type::Struct, 1);
        e.write(w);
    }
}

/// `app_info` (dsn.layer2.thrift), the fields rollout reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfo {
    /// 1: `app_status`.
    pub status: i32,
    /// 2: the app type (`pegasus`).
    pub app_type: String,
    /// 3: the name.
    pub app_name: String,
    /// 4: the id.
    pub app_id: i32,
    /// 5: partitions.
    pub partition_count: i32,
    /// 7: whether it is stateful.
    pub is_stateful: bool,
    /// 8: replicas per partition wanted.
    pub max_replica_count: i32,
}

impl Message for AppInfo {
    const NAME: &'static str = "app_info";

    fn write(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.status);
        w.field(Type::String, 2);
        w.string(&self.app_type);
        w.field(Type::String, 3);
        w.string(&self.app_name);
        w.field(Type::I32, 4);
        w.i32(self.app_id);
        w.field(Type::I32, 5);
        w.i32(self.partition_count);
        w.field(Type::Map, 6);
        w.map(Type::String, Type::String, 0);
        w.field(Type::Bool, 7);
        w.bool(self.is_stateful);
        w.field(Type::I32, 8);
        w.i32(self.max_replica_count);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.status = field!(r, ty, id, n, Type::I32, r.i32()?),
                2 => m.app_type = field!(r, ty, id, n, Type::String, r.string()?),
                3 => m.app_name = field!(r, ty, id, n, Type::String, r.string()?),
                4 => m.app_id = field!(r, ty, id, n, Type::I32, r.i32()?),
                5 => m.partition_count = field!(r, ty, id, n, Type::I32, r.i32()?),
                7 => m.is_stateful = field!(r, ty, id, n, Type::Bool, r.bool()?),
                8 => m.max_replica_count = field!(r, ty, id, n, Type::I32, r.i32()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `node_info` (meta_admin.thrift).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// 1: `node_status`.
    pub status: i32,
    /// 2: the replica server's address.
    pub node: RpcAddress,
    /// 3: its host and port (2.6+).
    pub hp_node: Option<HostPort>,
}

impl Message for NodeInfo {
    const NAME: &'static str = "node_info";

    fn write(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.status);
        w.field(Type::Struct, 2);
        self.node.write(w);
        if let Some(hp) = &self.hp_node {
            w.field(Type::Struct, 3);
            hp.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.status = field!(r, ty, id, n, Type::I32, r.i32()?),
                2 => m.node = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                3 => m.hp_node = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A request with one i32 field 1 (`configuration_list_nodes_request` with a `node_status`
/// filter, `configuration_meta_control_request` with a `meta_function_level`,
/// `configuration_list_apps_request` with an `app_status` filter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct I32Request(pub i32);

impl Message for I32Request {
    const NAME: &'static str = "request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(r, |r, ty, id| {
            if id == 1 {
                m.0 = field!(r, ty, id, Self::NAME, Type::I32, r.i32()?);
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(m)
    }
}

/// A response with an error code and one list of structs in field 2
/// (`configuration_list_nodes_response`, `configuration_list_apps_response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResponse<T> {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the items.
    pub infos: Vec<T>,
}

impl<T: Message> Message for ListResponse<T> {
    const NAME: &'static str = "list response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        write_list(w, 2, Type::Struct, &self.infos, |w, i| {
            i.write(w);
            w.stop();
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut err = None;
        let mut infos = Vec::new();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    infos = list(r, n, id, Type::Struct, T::read)?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Self { err, infos })
    }
}

/// A request with no fields (`configuration_cluster_info_request`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty;

impl Message for Empty {
    const NAME: &'static str = "empty request";

    fn write(&self, _: &mut Writer) {}

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        fields(r, |_, _, _| Ok(false))?;
        Ok(Self)
    }
}

/// `configuration_cluster_info_response`: keys and values side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfoResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the keys.
    pub keys: Vec<String>,
    /// 3: the values.
    pub values: Vec<String>,
}

impl ClusterInfoResponse {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
    }
}

impl Message for ClusterInfoResponse {
    const NAME: &'static str = "configuration_cluster_info_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        write_list(w, 2, Type::String, &self.keys, |w, s| w.string(s));
        write_list(w, 3, Type::String, &self.values, |w, s| w.string(s));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 | 3 => {
                    expect(n, id, Type::List, ty)?;
                    let v = list(r, n, id, Type::String, |r| r.string())?;
                    if id == 2 {
                        m.keys = v;
                    } else {
                        m.values = v;
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A response with an error code and one i32 field 2
/// (`configuration_meta_control_response` with the old level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct I32Response {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the value.
    pub value: i32,
}

impl Message for I32Response {
    const NAME: &'static str = "configuration_meta_control_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        w.field(Type::I32, 2);
        w.i32(self.value);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => m.value = field!(r, ty, id, n, Type::I32, r.i32()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A response with only an error code (`configuration_balancer_response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
}

impl Message for ErrResponse {
    const NAME: &'static str = "configuration_balancer_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(r, |r, ty, id| {
            if id == 1 {
                m.err = Some(field!(
                    r,
                    ty,
                    id,
                    Self::NAME,
                    Type::Struct,
                    ErrorCode::read(r)?
                ));
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(m)
    }
}

/// `configuration_proposal_action`: both address forms are written (pegasus.md §3.3: a
/// meta given only IPs reverse-resolves them, and crashed doing so in #2007).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProposalAction {
    /// 1: the server that carries the action out (the partition's primary).
    pub target: RpcAddress,
    /// 2: the node the action is about.
    pub node: RpcAddress,
    /// 3: `config_type`.
    pub kind: i32,
    /// 5: `target` as host and port.
    pub hp_target: Option<HostPort>,
    /// 6: `node` as host and port.
    pub hp_node: Option<HostPort>,
}

impl Message for ProposalAction {
    const NAME: &'static str = "configuration_proposal_action";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.target.write(w);
        w.field(Type::Struct, 2);
        self.node.write(w);
        w.field(Type::I32, 3);
        w.i32(self.kind);
        if let Some(hp) = &self.hp_target {
            w.field(Type::Struct, 5);
            hp.write(w);
        }
        if let Some(hp) = &self.hp_node {
            w.field(Type::Struct, 6);
            hp.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.target = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                2 => m.node = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                3 => m.kind = field!(r, ty, id, n, Type::I32, r.i32()?),
                5 => m.hp_target = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                6 => m.hp_node = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `configuration_balancer_request`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalancerRequest {
    /// 1: the partition.
    pub gpid: Gpid,
    /// 2: the actions, in order.
    pub action_list: Vec<ProposalAction>,
    /// 3: force.
    pub force: Option<bool>,
    /// 4: `balancer_request_type` (move_primary 0).
    pub balance_type: Option<i32>,
}

impl Message for BalancerRequest {
    const NAME: &'static str = "configuration_balancer_request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.gpid.write(w);
        write_list(w, 2, Type::Struct, &self.action_list, |w, a| {
            a.write(w);
            w.stop();
        });
        if let Some(f) = self.force {
            w.field(Type::Bool, 3);
            w.bool(f);
        }
        if let Some(t) = self.balance_type {
            w.field(Type::I32, 4);
            w.i32(t);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.gpid = field!(r, ty, id, n, Type::Struct, Gpid::read(r)?),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.action_list = list(r, n, id, Type::Struct, ProposalAction::read)?;
                }
                3 => m.force = Some(field!(r, ty, id, n, Type::Bool, r.bool()?)),
                4 => m.balance_type = Some(field!(r, ty, id, n, Type::I32, r.i32()?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `command` (command.thrift): a remote command and its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// 1: the command, such as `meta.lb.assign_delay_ms`.
    pub cmd: String,
    /// 2: its arguments.
    pub arguments: Vec<String>,
}

impl Message for Command {
    const NAME: &'static str = "command";

    fn write(&self, w: &mut Writer) {
        w.field(Type::String, 1);
        w.string(&self.cmd);
        write_list(w, 2, Type::String, &self.arguments, |w, s| w.string(s));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.cmd = field!(r, ty, id, n, Type::String, r.string()?),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.arguments = list(r, n, id, Type::String, |r| r.string())?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `query_replica_info_request` (replica_admin.thrift).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryReplicaInfoRequest {
    /// 1: the replica server asked.
    pub node1: RpcAddress,
}

impl Message for QueryReplicaInfoRequest {
    const NAME: &'static str = "query_replica_info_request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.node1.write(w);
        if let Some(a) = self.node1.0 {
            w.field(Type::Struct, 2);
            HostPort::from_addr(a).write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.node1 = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                2 => drop(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `query_replica_info_response`: the replicas the server knows, closed ones included (each
/// `replica_info`'s gpid, field 1, and `partition_status`, field 3; its other fields are plain
/// and skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryReplicaInfoResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: each replica's partition and `partition_status`.
    pub replicas: Vec<(Gpid, i32)>,
}

impl Message for QueryReplicaInfoResponse {
    const NAME: &'static str = "query_replica_info_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        write_list(w, 2, Type::Struct, &self.replicas, |w, (g, status)| {
            w.field(Type::Struct, 1);
            g.write(w);
            w.field(Type::I32, 3);
            w.i32(*status);
            w.stop();
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.replicas = list(r, n, id, Type::Struct, |r| {
                        let (mut pid, mut status) = (None, 0);
                        let within = "replica_info";
                        fields(r, |r, ty, id| {
                            match id {
                                1 => {
                                    pid = Some(field!(
                                        r,
                                        ty,
                                        id,
                                        within,
                                        Type::Struct,
                                        Gpid::read(r)?
                                    ));
                                }
                                3 => status = field!(r, ty, id, within, Type::I32, r.i32()?),
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        let pid = pid.ok_or(DecodeError::Missing {
                            within,
                            field: "pid",
                        })?;
                        Ok((pid, status))
                    })?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}
