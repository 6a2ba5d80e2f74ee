//! The frames of "thrift over rDSN" (docs/pegasus-wire.md, "Frames", from the Go
//! client's `session/codec.go` and the server's `src/rpc/thrift_message_parser.cpp`).
//!
//! A request is a fixed 48-byte v0 header (all big-endian: `THFT`, version 0, header length
//! 48, header crc 0, body length, body crc 0, app id, partition index, client timeout in
//! milliseconds, thread hash `app_id * 7919 + partition_index`, partition hash) and a body:
//! a strict CALL message named by the RPC code whose args struct has one field, the request.
//! The Java client's v1 header (`THFT`, version 1, meta length, body length, a
//! `thrift_request_meta_v1` struct) is accepted by [`read_request`] too.
//!
//! A response is a `u32` total length (counting those four bytes), the RPC layer's error
//! name as a thrift string, a strict REPLY message named `<RPC code>_ACK` with the same
//! sequence id and, when the error is `ERR_OK`, a result struct whose field 0 holds the
//! response (a struct, or a string for `RPC_CLI_CLI_CALL`).

use crate::thrift::{DecodeError, MessageType, Reader, Type, Writer};
use crate::types::Gpid;

/// The v0 request header's length.
pub const HEADER_LEN: usize = 48;

/// The largest frame accepted from a peer: 64 MiB. A length above it is refused before
/// anything is allocated.
pub const MAX_FRAME: usize = 64 << 20;

const MAGIC: &[u8; 4] = b"THFT";

/// What a request's header says besides the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The partition the request is for (0.0 for admin RPCs).
    pub gpid: Gpid,
    /// The client's timeout, milliseconds.
    pub timeout_ms: u32,
    /// The key's partition hash (0 for admin RPCs).
    pub partition_hash: u64,
}

/// Encodes a whole request: header and body. `args` writes the request struct's fields
/// (without its STOP); for a bare string request (none exist today) use a struct anyway.
pub fn encode_request(
    rpc: &str,
    seqid: i32,
    meta: RequestMeta,
    args: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    request(rpc, seqid, meta, Type::Struct, |w| {
        args(w);
        w.stop(); // the request struct
    })
}

/// Encodes a request whose one argument is a blob (`RPC_RRDB_RRDB_GET`, `_REMOVE`, `_TTL`
/// take the key itself). `base.blob` is one of the special types: its field header says
/// STRUCT, its payload is a thrift binary.
pub fn encode_request_blob(rpc: &str, seqid: i32, meta: RequestMeta, blob: &[u8]) -> Vec<u8> {
    request(rpc, seqid, meta, Type::Struct, |w| w.binary(blob))
}

fn request(
    rpc: &str,
    seqid: i32,
    meta: RequestMeta,
    ty: Type,
    arg: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let mut body = Writer::new();
    body.message_begin(rpc, MessageType::Call, seqid);
    body.field(ty, 1);
    arg(&mut body);
    body.stop(); // the args struct
    let body = body.into_bytes();
    let mut out = Writer::new();
    let gpid = meta.gpid;
    out.u32(u32::from_be_bytes(*MAGIC));
    out.i32(0);
    out.i32(HEADER_LEN as i32);
    out.i32(0);
    out.i32(i32::try_from(body.len()).unwrap_or(i32::MAX));
    out.i32(0);
    out.i32(gpid.app_id);
    out.i32(gpid.partition_index);
    out.u32(meta.timeout_ms);
    out.i32(
        gpid.app_id
            .wrapping_mul(7919)
            .wrapping_add(gpid.partition_index),
    );
    out.i64(meta.partition_hash as i64);
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The body length a request header announces, and the header's own length (48 for v0; for
/// v1, 16 plus the meta length). Needs the first 16 bytes.
///
/// # Errors
/// Not `THFT`, an unknown version, a v0 header length other than 48, or a frame larger than
/// [`MAX_FRAME`].
pub fn request_lengths(head: &[u8; 16]) -> Result<(usize, usize), DecodeError> {
    if &head[..4] != MAGIC {
        return Err(DecodeError::Invalid(format!(
            "not an rDSN thrift request: magic {:02x?}, expected \"THFT\"",
            &head[..4]
        )));
    }
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (header, body) = match word(4) {
        0 => {
            if word(8) as usize != HEADER_LEN {
                return Err(DecodeError::Invalid(format!(
                    "a v0 header of length {}, expected 48",
                    word(8)
                )));
            }
            // The body length sits at 16, after the header crc: read it from the full header.
            (HEADER_LEN, usize::MAX)
        }
        1 => (16 + word(8) as usize, word(12) as usize),
        v => {
            return Err(DecodeError::Invalid(format!(
                "unknown rDSN thrift header version {v}"
            )));
        }
    };
    if header > MAX_FRAME || (body != usize::MAX && body > MAX_FRAME) {
        return Err(DecodeError::Invalid(format!(
            "a frame larger than {MAX_FRAME} bytes"
        )));
    }
    Ok((header, body))
}

/// The body length of a full v0 header.
///
/// # Errors
/// A body larger than [`MAX_FRAME`].
pub fn v0_body_len(header: &[u8]) -> Result<usize, DecodeError> {
    let len = header
        .get(16..20)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(DecodeError::Truncated {
            what: "a request header",
        })?;
    if len > MAX_FRAME {
        return Err(DecodeError::Invalid(format!(
            "a body of {len} bytes, more than {MAX_FRAME}"
        )));
    }
    Ok(len)
}

/// A request as a server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The RPC code.
    pub rpc: String,
    /// The sequence id to answer with.
    pub seqid: i32,
    /// The header's partition and timeout.
    pub meta: RequestMeta,
    /// The argument's declared type (STRUCT for Pegasus's RPCs, blobs included).
    pub arg: Type,
    /// The argument's bytes (after the args struct's field header).
    pub body: Vec<u8>,
}

/// Parses a whole request (`header` then `body`, as [`request_lengths`] sized them).
///
/// # Errors
/// A malformed header or message.
pub fn read_request(header: &[u8], body: &[u8]) -> Result<Request, DecodeError> {
    let mut h = Reader::new(header);
    h.u32()?; // magic, checked by request_lengths
    let meta = match h.i32()? {
        0 => {
            for _ in 0..4 {
                h.i32()?; // header length, crc, body length, body crc
            }
            let app_id = h.i32()?;
            let partition_index = h.i32()?;
            let timeout_ms = h.u32()?;
            h.i32()?; // thread hash
            let partition_hash = h.i64()? as u64;
            RequestMeta {
                gpid: Gpid::new(app_id, partition_index),
                timeout_ms,
                partition_hash,
            }
        }
        _ => {
            h.u32()?;
            h.u32()?;
            read_meta_v1(&mut h)?
        }
    };
    let mut r = Reader::new(body);
    let (rpc, kind, seqid) = r.message_begin()?;
    if kind != MessageType::Call && kind != MessageType::Oneway {
        return Err(DecodeError::Invalid(format!(
            "a request of message type {kind:?}"
        )));
    }
    // The args struct: the server reads its first field, whatever its id.
    // It cannot be skipped generically (rDSN's special types say STRUCT but are raw), so
    // the request is the rest of the body; its decoder stops at its own STOP.
    let Some((ty, _)) = r.field()? else {
        return Err(DecodeError::Invalid(format!("{rpc}: an empty args struct")));
    };
    if ty != Type::Struct && ty != Type::String {
        return Err(DecodeError::Invalid(format!(
            "{rpc}: the args field has type {ty:?}, expected a struct or a blob"
        )));
    }
    Ok(Request {
        rpc,
        seqid,
        meta,
        arg: ty,
        body: body[r.position()..].to_vec(),
    })
}

fn read_meta_v1(r: &mut Reader<'_>) -> Result<RequestMeta, DecodeError> {
    let mut m = RequestMeta::default();
    while let Some((ty, id)) = r.field()? {
        match (id, ty) {
            (1, Type::I32) => m.gpid.app_id = r.i32()?,
            (2, Type::I32) => m.gpid.partition_index = r.i32()?,
            (3, Type::I32) => m.timeout_ms = r.i32()? as u32,
            (4, Type::I64) => m.partition_hash = r.i64()? as u64,
            _ => r.skip(ty)?,
        }
    }
    Ok(m)
}

/// How a response's payload is written: a struct's fields, or a bare string.
pub enum Payload<'a> {
    /// A struct: the closure writes its fields (the STOP is added).
    Struct(&'a dyn Fn(&mut Writer)),
    /// A string (`RPC_CLI_CLI_CALL`'s reply).
    String(&'a str),
    /// No body: the RPC layer's error is not `ERR_OK`.
    None,
}

impl std::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Struct(_) => f.write_str("Struct(..)"),
            Self::String(s) => f.debug_tuple("String").field(s).finish(),
            Self::None => f.write_str("None"),
        }
    }
}

/// Encodes a response frame for `rpc` and `seqid`.
pub fn encode_response(rpc: &str, seqid: i32, error: &str, payload: Payload<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(0); // the total length, set below
    w.string(error);
    w.message_begin(&format!("{rpc}_ACK"), MessageType::Reply, seqid);
    match payload {
        Payload::Struct(f) => {
            w.field(Type::Struct, 0);
            f(&mut w);
            w.stop();
            w.stop();
        }
        Payload::String(s) => {
            w.field(Type::String, 0);
            w.string(s);
            w.stop();
        }
        Payload::None => {}
    }
    let mut bytes = w.into_bytes();
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// A response as a client reads it: the frame after its length word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The RPC layer's error name.
    pub error: String,
    /// The reply's name (`<RPC code>_ACK`).
    pub name: String,
    /// The sequence id it answers.
    pub seqid: i32,
    /// The result struct's field 0: its type and bytes; `None` when the error is not
    /// `ERR_OK` or the result is empty.
    pub result: Option<(Type, Vec<u8>)>,
}

/// The total length a response frame announces (its first four bytes).
///
/// # Errors
/// A length under 4 or above [`MAX_FRAME`].
pub fn response_len(head: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(head) as usize;
    if !(4..=MAX_FRAME).contains(&len) {
        return Err(DecodeError::Invalid(format!(
            "a response frame of {len} bytes (4 to {MAX_FRAME} allowed)"
        )));
    }
    Ok(len)
}

/// Parses a response frame without its length word.
///
/// # Errors
/// A malformed frame.
pub fn read_response(frame: &[u8]) -> Result<Response, DecodeError> {
    let mut r = Reader::new(frame);
    let error = r.string()?;
    let (name, kind, seqid) = r.message_begin()?;
    if kind != MessageType::Reply && kind != MessageType::Exception {
        return Err(DecodeError::Invalid(format!(
            "a response of message type {kind:?}"
        )));
    }
    // The result struct has one field, 0 ("success"); as for requests, its value is the
    // rest of the frame, since a struct holding special types cannot be skipped.
    let mut result = None;
    if error == "ERR_OK" && r.remaining() > 0 {
        match r.field()? {
            Some((ty, 0)) => result = Some((ty, frame[r.position()..].to_vec())),
            Some((_, id)) => {
                return Err(DecodeError::Invalid(format!(
                    "{name}: a result field {id}, expected 0"
                )));
            }
            None => {}
        }
    }
    Ok(Response {
        error,
        name,
        seqid,
        result,
    })
}
