//! What a replica server lists (`idl/replica_admin.thrift`, `idl/metadata.thrift`).

use crate::thrift::{DecodeError, Reader, Type, Writer, expect};
use crate::types::{ErrorCode, Gpid, HostPort, RpcAddress};

use super::{Message, fields, list, write_err, write_list};

/// `query_replica_info_request` (replica_admin.thrift): field 1 only, which every version
/// has (2.4 and 2.5 have no field 2, master's `hp_node1`, and a raw host name behind a field
/// header they do not know is misread; the handler ignores the request anyway).
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
