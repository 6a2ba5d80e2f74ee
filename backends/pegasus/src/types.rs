//! rDSN's special types. `idl/dsn.thrift` declares them as structs, so field headers and
//! element types say STRUCT, but their payload is raw (docs/pegasus-wire.md, from
//! `src/common/serialization_helper/thrift_helper.h` and the Go client's `idl/base`):
//!
//! - [`ErrorCode`]: a thrift string, the code's name (`ERR_OK`, ...);
//! - [`Gpid`]: one i64, the app id in the low 32 bits, the partition index in the high 32;
//! - [`RpcAddress`]: one i64, `ipv4 << 32 | port << 16 | type` with type 1 for IPv4, and 0
//!   for no address;
//! - [`HostPort`]: a thrift string (the host), an i16 port and an i8 type, back to back;
//! - blob: a thrift binary.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::thrift::{DecodeError, Reader, Writer};

/// An rDSN error code, by name (`ERR_OK`, `ERR_FORWARD_TO_OTHERS`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub String);

impl ErrorCode {
    /// `ERR_OK`.
    pub fn ok() -> Self {
        Self("ERR_OK".into())
    }

    /// An error code by name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// Whether it is `ERR_OK`.
    pub fn is_ok(&self) -> bool {
        self.0 == "ERR_OK"
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Writes the raw payload.
    pub fn write(&self, w: &mut Writer) {
        w.string(&self.0);
    }

    /// Reads the raw payload.
    ///
    /// # Errors
    /// Truncated or not UTF-8.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.string().map(Self)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partition id: the app (table) id and the partition index, shown `app.index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gpid {
    /// The app id.
    pub app_id: i32,
    /// The partition index.
    pub partition_index: i32,
}

impl Gpid {
    /// A gpid.
    pub fn new(app_id: i32, partition_index: i32) -> Self {
        Self {
            app_id,
            partition_index,
        }
    }

    /// The raw i64: app id in the low 32 bits, partition index in the high 32.
    pub fn to_raw(self) -> i64 {
        (i64::from(self.partition_index) << 32) | i64::from(self.app_id as u32)
    }

    /// From the raw i64.
    pub fn from_raw(raw: i64) -> Self {
        Self {
            app_id: raw as u32 as i32,
            partition_index: (raw >> 32) as i32,
        }
    }

    /// Writes the raw payload.
    pub fn write(self, w: &mut Writer) {
        w.i64(self.to_raw());
    }

    /// Reads the raw payload.
    ///
    /// # Errors
    /// Truncated.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.i64().map(Self::from_raw)
    }
}

impl fmt::Display for Gpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.app_id, self.partition_index)
    }
}

/// An rDSN address: an IPv4 endpoint, or none (the raw 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcAddress(pub Option<SocketAddrV4>);

impl RpcAddress {
    /// The address of `addr`.
    pub fn new(addr: SocketAddrV4) -> Self {
        Self(Some(addr))
    }

    /// No address.
    pub fn none() -> Self {
        Self(None)
    }

    /// The raw i64: `ipv4 << 32 | port << 16 | 1`, or 0.
    pub fn to_raw(self) -> i64 {
        match self.0 {
            Some(a) => {
                let ip = u64::from(u32::from(*a.ip()));
                ((ip << 32) | (u64::from(a.port()) << 16) | 1) as i64
            }
            None => 0,
        }
    }

    /// From the raw i64. A type other than IPv4 (1) is no address.
    pub fn from_raw(raw: i64) -> Self {
        let raw = raw as u64;
        if raw & 0xffff != 1 {
            return Self(None);
        }
        let ip = Ipv4Addr::from((raw >> 32) as u32);
        let port = ((raw >> 16) & 0xffff) as u16;
        Self(Some(SocketAddrV4::new(ip, port)))
    }

    /// Writes the raw payload.
    pub fn write(self, w: &mut Writer) {
        w.i64(self.to_raw());
    }

    /// Reads the raw payload.
    ///
    /// # Errors
    /// Truncated.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.i64().map(Self::from_raw)
    }
}

impl From<SocketAddrV4> for RpcAddress {
    fn from(a: SocketAddrV4) -> Self {
        Self(Some(a))
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("(none)"),
        }
    }
}

/// A host name and port (Pegasus 2.6+ sends these beside the i64 addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The host; empty for none.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// From an IPv4 endpoint.
    pub fn from_addr(a: SocketAddrV4) -> Self {
        Self::new(a.ip().to_string(), a.port())
    }

    /// Whether it names a host.
    pub fn is_valid(&self) -> bool {
        !self.host.is_empty()
    }

    /// Writes the raw payload: host, port, type (1 when valid, else 0).
    pub fn write(&self, w: &mut Writer) {
        w.string(&self.host);
        w.i16(self.port as i16);
        w.i8(i8::from(self.is_valid()));
    }

    /// Reads the raw payload; an invalid type gives an empty host.
    ///
    /// # Errors
    /// Truncated or not UTF-8.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let host = r.string()?;
        let port = r.i16()? as u16;
        let ty = r.i8()?;
        Ok(if ty == 1 {
            Self { host, port }
        } else {
            Self::default()
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// An IPv4 endpoint from a socket address, if it is one.
pub fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}
