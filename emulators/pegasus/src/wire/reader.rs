//! The server's thrift reader: a model of how a Pegasus server's C++ code reads request bytes,
//! written from the sources it follows and sharing nothing with the backend's client codec.
//!
//! Pegasus 2.4, 2.5 and master all pin Apache Thrift 0.9.3 (`thirdparty/CMakeLists.txt`), and
//! read a request with `TBinaryProtocol` over rDSN's `binary_reader_transport`
//! (`src/common/serialization_helper/thrift_helper.h` @v2.5.0, under `src/rdsn/include/dsn/cpp/`
//! @v2.4.0). What matters for a request the server does not expect:
//!
//! - every read is all-or-nothing, and a short read throws `END_OF_FILE`
//!   (`binary_reader_transport::read`);
//! - a string's length is checked for a negative value (`NEGATIVE_SIZE`), then the string is
//!   allocated, then read (`TBinaryProtocol.tcc` `readStringBody` @thrift 0.9.3);
//! - `skip` (`TProtocol.h` @thrift 0.9.3) consumes nothing for a type byte it does not know
//!   and returns: a container of such elements loops over its announced size doing nothing;
//! - generated readers and `skip` count nesting and throw past 64 levels
//!   (`TProtocol::incrementInputRecursionDepth`);
//! - rDSN's special types are read by hand-written code that counts no nesting: `gpid` and
//!   `rpc_address` are one i64, and `rpc_address::read` CHECKs that its two low bits (the
//!   address type) are 0 or 1 (`thrift_helper.h` @v2.5.0, `dassert` @v2.4.0); master's
//!   `host_port` is a string, an i16 and an i8 whose type it CHECKs the same way.
//!
//! No handler on a server's request path catches an exception, so every [`Abort`] ends the
//! server process (docs/upstream/pegasus.md §3).

/// Why the server's reader gave up: on a real server an uncaught exception or a failed CHECK,
/// which ends the process.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Abort {
    /// `TTransportException(END_OF_FILE)`: a read past the request's bytes.
    #[error("TTransportException END_OF_FILE: {wanted} bytes wanted, {left} left")]
    Eof {
        /// Bytes the read wanted.
        wanted: usize,
        /// Bytes left.
        left: usize,
    },
    /// `TProtocolException(NEGATIVE_SIZE)`.
    #[error("TProtocolException NEGATIVE_SIZE: {0}")]
    NegativeSize(i32),
    /// `TProtocolException(DEPTH_LIMIT)`.
    #[error("TProtocolException DEPTH_LIMIT")]
    DepthLimit,
    /// A failed CHECK in a special type's reader.
    #[error("CHECK failed: {0}")]
    Check(String),
}

/// The recursion limit of thrift 0.9.3's protocols (`DEFAULT_RECURSION_LIMIT`).
const DEPTH_LIMIT: u32 = 64;

/// A thrift type byte the generated readers and `skip` know (`TProtocol.h` `TType`).
pub(crate) mod ty {
    pub(crate) const STOP: u8 = 0;
    pub(crate) const BOOL: u8 = 2;
    pub(crate) const BYTE: u8 = 3;
    pub(crate) const DOUBLE: u8 = 4;
    pub(crate) const I16: u8 = 6;
    pub(crate) const I32: u8 = 8;
    pub(crate) const I64: u8 = 10;
    pub(crate) const STRING: u8 = 11;
    pub(crate) const STRUCT: u8 = 12;
    pub(crate) const MAP: u8 = 13;
    pub(crate) const SET: u8 = 14;
    pub(crate) const LIST: u8 = 15;
}

/// The reader over one request's bytes.
#[derive(Debug)]
pub(crate) struct CppReader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
    /// Iterations `skip` made over containers of elements of an unknown type, each doing
    /// nothing: a real server spins through them.
    pub(crate) spins: u64,
    /// The largest string the reader allocated before reading it.
    pub(crate) allocated: u64,
}

impl<'a> CppReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            depth: 0,
            spins: 0,
            allocated: 0,
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Abort> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(Abort::Eof { wanted: n, left });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Abort> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, Abort> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, Abort> {
        Ok(self.byte()? != 0)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, Abort> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Abort> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, Abort> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// `readBinary`: the length, the allocation, then the bytes.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], Abort> {
        let len = self.i32()?;
        if len < 0 {
            return Err(Abort::NegativeSize(len));
        }
        self.allocated = self.allocated.max(len as u64);
        self.take(len as usize)
    }

    /// `readString`, with bytes that are not UTF-8 kept as the replacement character (a C++
    /// `std::string` takes any byte).
    pub(crate) fn string(&mut self) -> Result<String, Abort> {
        Ok(String::from_utf8_lossy(self.binary()?).into_owned())
    }

    /// `readFieldBegin`: the type byte, and the id unless the type is STOP.
    pub(crate) fn field_begin(&mut self) -> Result<(u8, i16), Abort> {
        let t = self.byte()?;
        if t == ty::STOP {
            return Ok((t, 0));
        }
        Ok((t, self.i16()?))
    }

    /// `readListBegin` and `readSetBegin`: the element type and a size that may not be
    /// negative.
    pub(crate) fn list_begin(&mut self) -> Result<(u8, usize), Abort> {
        let t = self.byte()?;
        let n = self.i32()?;
        if n < 0 {
            return Err(Abort::NegativeSize(n));
        }
        Ok((t, n as usize))
    }

    /// One more level of nesting, as a generated `read` or `skip` counts it.
    pub(crate) fn enter(&mut self) -> Result<(), Abort> {
        self.depth += 1;
        if self.depth > DEPTH_LIMIT {
            return Err(Abort::DepthLimit);
        }
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// `TProtocol::skip` of thrift 0.9.3: a type byte it does not know consumes nothing.
    pub(crate) fn skip(&mut self, t: u8) -> Result<(), Abort> {
        self.enter()?;
        let r = self.skip_inner(t);
        self.leave();
        r
    }

    fn skip_inner(&mut self, t: u8) -> Result<(), Abort> {
        match t {
            ty::BOOL | ty::BYTE => {
                self.take(1)?;
            }
            ty::I16 => {
                self.take(2)?;
            }
            ty::I32 => {
                self.take(4)?;
            }
            ty::I64 | ty::DOUBLE => {
                self.take(8)?;
            }
            ty::STRING => {
                self.binary()?;
            }
            ty::STRUCT => loop {
                let (ft, _) = self.field_begin()?;
                if ft == ty::STOP {
                    break;
                }
                self.skip(ft)?;
            },
            ty::MAP => {
                let k = self.byte()?;
                let v = self.byte()?;
                let n = self.i32()?;
                if n < 0 {
                    return Err(Abort::NegativeSize(n));
                }
                if !known(k) && !known(v) {
                    self.spins += n as u64;
                    return Ok(());
                }
                for _ in 0..n {
                    self.skip(k)?;
                    self.skip(v)?;
                }
            }
            ty::SET | ty::LIST => {
                let (e, n) = self.list_begin()?;
                if !known(e) {
                    self.spins += n as u64;
                    return Ok(());
                }
                for _ in 0..n {
                    self.skip(e)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `gpid::read`: one i64, the app id in its low 32 bits.
    pub(crate) fn gpid(&mut self) -> Result<(i32, i32), Abort> {
        let raw = self.i64()?;
        Ok((raw as i32, (raw >> 32) as i32))
    }

    /// `rpc_address::read`: one i64 whose two low bits, the address type, must be 0
    /// (invalid) or 1 (IPv4).
    pub(crate) fn rpc_address(&mut self) -> Result<i64, Abort> {
        let raw = self.i64()?;
        if raw & 3 > 1 {
            return Err(Abort::Check(format!(
                "rpc_address type {} of {raw:#018x} is neither invalid nor IPv4",
                raw & 3
            )));
        }
        Ok(raw)
    }

    /// `host_port::read` (master): host, port, and a type CHECKed to be 0 or 1.
    pub(crate) fn host_port(&mut self) -> Result<(String, u16), Abort> {
        let host = self.string()?;
        let port = self.i16()? as u16;
        let t = self.byte()?;
        if t > 1 {
            return Err(Abort::Check(format!("host_port type {t} of {host}:{port}")));
        }
        Ok((host, port))
    }
}

/// Whether `skip` does anything for type byte `t`.
fn known(t: u8) -> bool {
    matches!(
        t,
        ty::BOOL
            | ty::BYTE
            | ty::DOUBLE
            | ty::I16
            | ty::I32
            | ty::I64
            | ty::STRING
            | ty::STRUCT
            | ty::MAP
            | ty::SET
            | ty::LIST
    )
}

#[cfg(test)]
mod tests {
    use super::{Abort, CppReader, ty};

    #[test]
    fn skip_of_an_unknown_type_consumes_nothing() {
        let mut r = CppReader::new(&[1, 2, 3]);
        r.skip(46).unwrap();
        assert_eq!(r.position(), 0);
    }

    #[test]
    fn a_list_of_an_unknown_element_type_spins_over_its_size() {
        // LIST of type 0x31, size 0x3030302e: nothing consumed past the header.
        let mut r = CppReader::new(&[0x31, 0x30, 0x30, 0x30, 0x2e, 9]);
        r.skip(ty::LIST).unwrap();
        assert_eq!(r.position(), 5);
        assert_eq!(r.spins, 0x3030_302e);
    }

    #[test]
    fn a_string_longer_than_the_input_is_allocated_then_fails() {
        let mut r = CppReader::new(&[0x2e, 0x31, 0x30, 0x30, b'x']);
        assert!(matches!(r.binary(), Err(Abort::Eof { .. })));
        assert_eq!(r.allocated, 0x2e31_3030);
    }

    #[test]
    fn nesting_past_64_levels_throws() {
        let bytes = [ty::STRUCT, 0, 1].repeat(70);
        let mut r = CppReader::new(&bytes);
        assert_eq!(r.skip(ty::STRUCT), Err(Abort::DepthLimit));
    }

    #[test]
    fn an_rpc_address_of_type_two_fails_its_check() {
        let bytes = 2i64.to_be_bytes();
        let mut r = CppReader::new(&bytes);
        assert!(matches!(r.rpc_address(), Err(Abort::Check(_))));
    }
}
