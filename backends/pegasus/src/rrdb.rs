//! The data path of a Pegasus table (`idl/rrdb.thrift`): put, get, remove and ttl, which a
//! client sends to the partition's primary with the partition in the request header. Keys
//! and values are `base.blob`s (a special type: field header STRUCT, payload a binary).
//! `error` in the responses is the storage engine's status (0 ok, 1 not found).

use crate::messages::Message;
use crate::thrift::{DecodeError, Reader, Type, Writer, expect};

/// RPC codes of the data path.
pub mod rpc {
    /// `update_request` → `update_response`.
    pub const PUT: &str = "RPC_RRDB_RRDB_PUT";
    /// A key → `read_response`.
    pub const GET: &str = "RPC_RRDB_RRDB_GET";
    /// A key → `update_response`.
    pub const REMOVE: &str = "RPC_RRDB_RRDB_REMOVE";
    /// A key → `ttl_response`.
    pub const TTL: &str = "RPC_RRDB_RRDB_TTL";
}

/// The storage engine's status: found and done.
pub const OK: i32 = 0;
/// The storage engine's status: no such key.
pub const NOT_FOUND: i32 = 1;

/// `update_request`: a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateRequest {
    /// 1: the key (hash key length, hash key, sort key).
    pub key: Vec<u8>,
    /// 2: the value.
    pub value: Vec<u8>,
    /// 3: when it expires, seconds since the Pegasus epoch; 0 never.
    pub expire_ts_seconds: i32,
}

impl Message for UpdateRequest {
    const NAME: &'static str = "update_request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        w.binary(&self.key);
        w.field(Type::Struct, 2);
        w.binary(&self.value);
        w.field(Type::I32, 3);
        w.i32(self.expire_ts_seconds);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        while let Some((ty, id)) = r.field()? {
            match id {
                1 | 2 => {
                    // Some clients declare blobs as STRING; both carry a binary.
                    if ty != Type::String {
                        expect(n, id, Type::Struct, ty)?;
                    }
                    let b = r.binary()?.to_vec();
                    if id == 1 {
                        m.key = b;
                    } else {
                        m.value = b;
                    }
                }
                3 => {
                    expect(n, id, Type::I32, ty)?;
                    m.expire_ts_seconds = r.i32()?;
                }
                _ => r.skip(ty)?,
            }
        }
        Ok(m)
    }
}

/// `update_response`, `read_response` and `ttl_response` share their layout but for field 2
/// (a value, or the ttl) and the decree; this one struct reads and writes all three.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataResponse {
    /// 1: the storage engine's status.
    pub error: i32,
    /// 2 of `read_response`: the value.
    pub value: Option<Vec<u8>>,
    /// 2 of `ttl_response`: seconds left, -1 for none.
    pub ttl_seconds: Option<i32>,
    /// 3 (2 in `update_response`): the app id.
    pub app_id: i32,
    /// 4 (3 in `update_response`): the partition index.
    pub partition_index: i32,
    /// 4 of `update_response`: the write's decree.
    pub decree: Option<i64>,
    /// 6 (5 in `update_response`): the server that answered.
    pub server: String,
}

impl DataResponse {
    /// Writes it as `update_response` (put, remove).
    pub fn write_update(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.error);
        w.field(Type::I32, 2);
        w.i32(self.app_id);
        w.field(Type::I32, 3);
        w.i32(self.partition_index);
        w.field(Type::I64, 4);
        w.i64(self.decree.unwrap_or(0));
        w.field(Type::String, 5);
        w.string(&self.server);
    }

    /// Writes it as `read_response` (get) or `ttl_response` (ttl).
    pub fn write_read(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.error);
        match (&self.value, self.ttl_seconds) {
            (Some(v), _) => {
                w.field(Type::Struct, 2);
                w.binary(v);
            }
            (None, Some(t)) => {
                w.field(Type::I32, 2);
                w.i32(t);
            }
            (None, None) => {}
        }
        w.field(Type::I32, 3);
        w.i32(self.app_id);
        w.field(Type::I32, 4);
        w.i32(self.partition_index);
        w.field(Type::String, 6);
        w.string(&self.server);
    }

    /// Reads an `update_response`.
    ///
    /// # Errors
    /// A malformed struct.
    pub fn read_update(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = "update_response";
        while let Some((ty, id)) = r.field()? {
            match (id, ty) {
                (1, Type::I32) => m.error = r.i32()?,
                (2, Type::I32) => m.app_id = r.i32()?,
                (3, Type::I32) => m.partition_index = r.i32()?,
                (4, Type::I64) => m.decree = Some(r.i64()?),
                (5, Type::String) => m.server = r.string()?,
                (1..=5, _) => {
                    return Err(DecodeError::Invalid(format!(
                        "{n}: field {id} has type {ty:?}"
                    )));
                }
                _ => r.skip(ty)?,
            }
        }
        Ok(m)
    }

    /// Reads a `read_response` (`ttl` false) or a `ttl_response` (`ttl` true).
    ///
    /// # Errors
    /// A malformed struct.
    pub fn read_read(r: &mut Reader<'_>, ttl: bool) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        while let Some((ty, id)) = r.field()? {
            match (id, ty) {
                (1, Type::I32) => m.error = r.i32()?,
                (2, Type::I32) if ttl => m.ttl_seconds = Some(r.i32()?),
                (2, Type::Struct | Type::String) if !ttl => m.value = Some(r.binary()?.to_vec()),
                (3, Type::I32) => m.app_id = r.i32()?,
                (4, Type::I32) => m.partition_index = r.i32()?,
                (6, Type::String) => m.server = r.string()?,
                (1..=6, _) => {
                    return Err(DecodeError::Invalid(format!(
                        "read_response: field {id} has type {ty:?}"
                    )));
                }
                _ => r.skip(ty)?,
            }
        }
        Ok(m)
    }
}
