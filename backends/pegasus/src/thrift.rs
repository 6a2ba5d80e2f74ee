//! The thrift binary protocol, as far as Pegasus's RPCs need it: a writer into a `Vec<u8>`
//! and a reader over a byte slice that never panics and never reads past its input.
//!
//! Everything is big-endian; strings are an `i32` length then the bytes; a struct is its
//! fields (type byte, `i16` id, value) then a STOP byte; a list is its element type byte, an
//! `i32` count, then the elements; a map is key type, value type, `i32` count, then the pairs.
//! A strict message begins with `0x80010000 | type`, the name as a string, then the `i32`
//! sequence id (the Apache Thrift binary protocol specification).

/// A field or element type on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Type {
    /// End of a struct's fields.
    Stop = 0,
    /// `bool`, one byte.
    Bool = 2,
    /// `i8`.
    Byte = 3,
    /// `double`, eight bytes.
    Double = 4,
    /// `i16`.
    I16 = 6,
    /// `i32`.
    I32 = 8,
    /// `i64`.
    I64 = 10,
    /// `string` or `binary`.
    String = 11,
    /// A struct (also the declared type of rDSN's special types).
    Struct = 12,
    /// `map`.
    Map = 13,
    /// `set`.
    Set = 14,
    /// `list`.
    List = 15,
}

impl Type {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Stop,
            2 => Self::Bool,
            3 => Self::Byte,
            4 => Self::Double,
            6 => Self::I16,
            8 => Self::I32,
            10 => Self::I64,
            11 => Self::String,
            12 => Self::Struct,
            13 => Self::Map,
            14 => Self::Set,
            15 => Self::List,
            _ => return None,
        })
    }
}

/// A thrift message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A request.
    Call = 1,
    /// A response.
    Reply = 2,
    /// An exception instead of a response.
    Exception = 3,
    /// A request with no response.
    Oneway = 4,
}

/// What went wrong decoding bytes from a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside `what`.
    #[error("truncated: the input ends inside {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A type byte that thrift does not define.
    #[error("unknown thrift type byte {0}")]
    UnknownType(u8),
    /// A field had another type than the struct declares.
    #[error("field {field} of {within} has type {found:?}, expected {expected:?}")]
    WrongType {
        /// The struct.
        within: &'static str,
        /// The field id.
        field: i16,
        /// The declared type.
        expected: Type,
        /// The type on the wire.
        found: Type,
    },
    /// A length or count that is negative or larger than the input.
    #[error("{what} has length {len}, but {left} bytes are left")]
    BadLength {
        /// What was being read.
        what: &'static str,
        /// The length read.
        len: i64,
        /// Bytes left in the input.
        left: usize,
    },
    /// Nesting deeper than thrift messages of Pegasus ever go.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A message header that is not the strict binary protocol.
    #[error("not a strict thrift binary message (version word {0:#010x})")]
    NotStrict(u32),
    /// A required field is missing.
    #[error("{within} lacks its required field {field}")]
    Missing {
        /// The struct.
        within: &'static str,
        /// The field's name.
        field: &'static str,
    },
    /// Something else the protocol forbids, described.
    #[error("{0}")]
    Invalid(String),
}

const MAX_DEPTH: usize = 32;

/// Writes thrift binary values into a buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// How many bytes are written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A strict message header: version word with `kind`, `name`, `seqid`.
    pub fn message_begin(&mut self, name: &str, kind: MessageType, seqid: i32) {
        self.u32(0x8001_0000 | kind as u32);
        self.string(name);
        self.i32(seqid);
    }

    /// A field header.
    pub fn field(&mut self, ty: Type, id: i16) {
        self.buf.push(ty as u8);
        self.i16(id);
    }

    /// The end of a struct.
    pub fn stop(&mut self) {
        self.buf.push(Type::Stop as u8);
    }

    /// A list header.
    pub fn list(&mut self, elem: Type, len: usize) {
        self.buf.push(elem as u8);
        self.i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    /// A map header.
    pub fn map(&mut self, key: Type, value: Type, len: usize) {
        self.buf.push(key as u8);
        self.buf.push(value as u8);
        self.i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    /// A bool.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// An i8.
    pub fn i8(&mut self, v: i8) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An i16.
    pub fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An i32.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A u32 (the same four bytes as an i32).
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A string.
    pub fn string(&mut self, v: &str) {
        self.binary(v.as_bytes());
    }

    /// A binary (a string's framing around raw bytes).
    pub fn binary(&mut self, v: &[u8]) {
        self.i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
        self.buf.extend_from_slice(v);
    }
}

/// Reads thrift binary values from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many bytes were read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A bool (any non-zero byte is true).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.array::<1>("a bool")?[0] != 0)
    }

    /// An i8.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array("an i8")?))
    }

    /// An i16.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array("an i16")?))
    }

    /// An i32.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array("an i32")?))
    }

    /// A u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array("a u32")?))
    }

    /// An i64.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array("an i64")?))
    }

    /// A double.
    pub fn double(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.array("a double")?))
    }

    fn len(&mut self, what: &'static str, unit: usize) -> Result<usize, DecodeError> {
        let len = self.i32()?;
        let left = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n.saturating_mul(unit) <= left => Ok(n),
            _ => Err(DecodeError::BadLength {
                what,
                len: i64::from(len),
                left,
            }),
        }
    }

    /// A binary.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len("a string", 1)?;
        self.take(n, "a string")
    }

    /// A string, which must be UTF-8.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.binary()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::NotUtf8("a string"))
    }

    /// A strict message header: its name, type and sequence id.
    pub fn message_begin(&mut self) -> Result<(String, MessageType, i32), DecodeError> {
        let word = self.u32()?;
        if word & 0xffff_0000 != 0x8001_0000 {
            return Err(DecodeError::NotStrict(word));
        }
        let kind = match word & 0xff {
            1 => MessageType::Call,
            2 => MessageType::Reply,
            3 => MessageType::Exception,
            4 => MessageType::Oneway,
            other => {
                return Err(DecodeError::Invalid(format!(
                    "unknown thrift message type {other}"
                )));
            }
        };
        let name = self.string()?;
        let seqid = self.i32()?;
        Ok((name, kind, seqid))
    }

    /// A field header: `None` at the struct's STOP.
    pub fn field(&mut self) -> Result<Option<(Type, i16)>, DecodeError> {
        let b = self.array::<1>("a field header")?[0];
        let ty = Type::from_byte(b).ok_or(DecodeError::UnknownType(b))?;
        if ty == Type::Stop {
            return Ok(None);
        }
        Ok(Some((ty, self.i16()?)))
    }

    /// A list (or set) header: element type and count. The count is checked against the
    /// bytes left (each element takes at least one byte).
    pub fn list(&mut self) -> Result<(Type, usize), DecodeError> {
        let b = self.array::<1>("a list header")?[0];
        let ty = Type::from_byte(b).ok_or(DecodeError::UnknownType(b))?;
        let n = self.len("a list", min_size(ty))?;
        Ok((ty, n))
    }

    /// A map header: key type, value type and count.
    pub fn map(&mut self) -> Result<(Type, Type, usize), DecodeError> {
        let [k, v] = self.array::<2>("a map header")?;
        let k = Type::from_byte(k).ok_or(DecodeError::UnknownType(k))?;
        let v = Type::from_byte(v).ok_or(DecodeError::UnknownType(v))?;
        let n = self.len("a map", min_size(k) + min_size(v))?;
        Ok((k, v, n))
    }

    /// Skips one value of type `ty` (a field this client does not know).
    pub fn skip(&mut self, ty: Type) -> Result<(), DecodeError> {
        self.skip_depth(ty, 0)
    }

    fn skip_depth(&mut self, ty: Type, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        match ty {
            Type::Stop => Err(DecodeError::Invalid("a value of type STOP".into())),
            Type::Bool | Type::Byte => self.take(1, "a byte").map(drop),
            Type::I16 => self.take(2, "an i16").map(drop),
            Type::I32 => self.take(4, "an i32").map(drop),
            Type::I64 | Type::Double => self.take(8, "an i64").map(drop),
            Type::String => self.binary().map(drop),
            Type::Struct => {
                while let Some((t, _)) = self.field()? {
                    self.skip_depth(t, depth + 1)?;
                }
                Ok(())
            }
            Type::List | Type::Set => {
                let (t, n) = self.list()?;
                (0..n).try_for_each(|_| self.skip_depth(t, depth + 1))
            }
            Type::Map => {
                let (k, v, n) = self.map()?;
                (0..n).try_for_each(|_| {
                    self.skip_depth(k, depth + 1)?;
                    self.skip_depth(v, depth + 1)
                })
            }
        }
    }
}

/// The fewest bytes one value of `ty` takes, for bounding counts before allocating.
fn min_size(ty: Type) -> usize {
    match ty {
        Type::Stop | Type::Struct | Type::Bool | Type::Byte => 1,
        Type::I16 => 2,
        Type::I32 | Type::String | Type::List | Type::Set => 4,
        Type::Map => 6,
        Type::I64 | Type::Double => 8,
    }
}

/// Checks that a field has the declared type.
///
/// # Errors
/// [`DecodeError::WrongType`] naming the struct and field.
pub fn expect(
    within: &'static str,
    field: i16,
    expected: Type,
    found: Type,
) -> Result<(), DecodeError> {
    if expected == found {
        Ok(())
    } else {
        Err(DecodeError::WrongType {
            within,
            field,
            expected,
            found,
        })
    }
}
