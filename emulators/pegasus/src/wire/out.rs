//! The server's thrift writer: `TBinaryProtocol` as a Pegasus server writes its responses
//! (big-endian; strings as an i32 length and the bytes; a struct's fields as a type byte, an
//! i16 id and the value, ended by STOP; the strict message header), with rDSN's special types
//! raw behind a STRUCT field header (`thrift_helper.h` `gpid::write`, `rpc_address::write`,
//! `error_code::write`, master's `host_port::write`).

use super::reader::ty;

/// A response being written.
#[derive(Debug, Default)]
pub(crate) struct Out(Vec<u8>);

impl Out {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Appends what `other` wrote.
    pub(crate) fn append(&mut self, other: Out) -> &mut Self {
        self.0.extend_from_slice(&other.0);
        self
    }

    pub(crate) fn byte(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.byte(u8::from(v))
    }

    pub(crate) fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn binary(&mut self, v: &[u8]) -> &mut Self {
        self.i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
        self.0.extend_from_slice(v);
        self
    }

    pub(crate) fn string(&mut self, v: &str) -> &mut Self {
        self.binary(v.as_bytes())
    }

    pub(crate) fn field(&mut self, t: u8, id: i16) -> &mut Self {
        self.byte(t).i16(id)
    }

    pub(crate) fn stop(&mut self) -> &mut Self {
        self.byte(ty::STOP)
    }

    pub(crate) fn list(&mut self, elem: u8, n: usize) -> &mut Self {
        self.byte(elem).i32(i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// A strict message header: version word with the message type, name, sequence id.
    pub(crate) fn message_begin(&mut self, name: &str, kind: u8, seqid: i32) -> &mut Self {
        self.u32(0x8001_0000 | u32::from(kind))
            .string(name)
            .i32(seqid)
    }

    /// Field `id` of an `i32` (or an enum).
    pub(crate) fn i32_field(&mut self, id: i16, v: i32) -> &mut Self {
        self.field(ty::I32, id).i32(v)
    }

    /// Field `id` of an `i64`.
    pub(crate) fn i64_field(&mut self, id: i16, v: i64) -> &mut Self {
        self.field(ty::I64, id).i64(v)
    }

    /// Field `id` of a string.
    pub(crate) fn string_field(&mut self, id: i16, v: &str) -> &mut Self {
        self.field(ty::STRING, id).string(v)
    }

    /// Field `id` of a bool.
    pub(crate) fn bool_field(&mut self, id: i16, v: bool) -> &mut Self {
        self.field(ty::BOOL, id).bool(v)
    }

    /// Field `id` of an `error_code`: declared a struct, written as its name.
    pub(crate) fn error_field(&mut self, id: i16, name: &str) -> &mut Self {
        self.field(ty::STRUCT, id).string(name)
    }

    /// Field `id` of a `gpid`: declared a struct, written as one i64, the app id low.
    pub(crate) fn gpid_field(&mut self, id: i16, app: i32, pidx: i32) -> &mut Self {
        self.field(ty::STRUCT, id).i64(gpid(app, pidx))
    }

    /// Field `id` of an `rpc_address`: declared a struct, written as one i64.
    pub(crate) fn address_field(&mut self, id: i16, raw: i64) -> &mut Self {
        self.field(ty::STRUCT, id).i64(raw)
    }

    /// A `host_port` (master): host, port, type (1 for a host name, 0 for none).
    pub(crate) fn host_port(&mut self, hp: Option<&(String, u16)>) -> &mut Self {
        match hp {
            Some((host, port)) => self.string(host).i16(*port as i16).byte(1),
            None => self.string("").i16(0).byte(0),
        }
    }
}

/// A `gpid` as one i64: the partition index high, the app id low.
pub(crate) fn gpid(app: i32, pidx: i32) -> i64 {
    (i64::from(pidx) << 32) | i64::from(app as u32)
}
