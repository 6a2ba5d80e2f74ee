//! The partition configuration and the app (table) structs (`idl/dsn.layer2.thrift`).

use crate::thrift::{DecodeError, Reader, Type, Writer, expect};
use crate::types::{ErrorCode, Gpid, HostPort, RpcAddress};

use super::{Message, fields, list, write_err, write_list};

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
