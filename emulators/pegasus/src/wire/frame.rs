//! rDSN's thrift framing as a server reads requests and writes responses
//! (`src/runtime/rpc/thrift_message_parser.cpp` @v2.5.0, `src/rpc/thrift_message_parser.cpp`
//! @master; the same layout under `src/rdsn/` @v2.4.0).
//!
//! A request starts with `THFT` and a header version: v0 is 48 bytes (magic, version, header
//! length 48, header crc, body length, body crc, app id, partition index, client timeout,
//! thread hash, partition hash), v1 is the magic, the version, the length of a thrift-encoded
//! meta struct and the body length, then that meta (app id 1, partition index 2, client
//! timeout 3, partition hash 4) — `thrift_message_parser::parse_request_header`. The body is
//! a strict thrift message: its name is the RPC code, then the args struct.
//! A response is a u32 length that counts itself, the RPC layer's error name, and a strict
//! REPLY message named `<RPC>_ACK` whose field 0 is the result (`thrift_message_parser::
//! prepare_on_send`, `rpc_message.cpp`).

use super::out::Out;
use super::reader::{CppReader, ty};

const MAGIC: &[u8; 4] = b"THFT";

/// The largest frame the emulator reads; a larger one closes the connection.
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// What a request's header and message header say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The RPC code (the message name).
    pub(crate) rpc: String,
    /// The sequence id to answer with.
    pub(crate) seqid: i32,
    /// The partition the header names (app id, partition index).
    pub(crate) gpid: (i32, i32),
    /// The message after its header: the args struct.
    pub(crate) args: Vec<u8>,
}

/// Why a frame cannot be read: the server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadFrame(pub(crate) String);

/// The header length and the body length of a request whose first 16 bytes are `head`; the
/// body length of a v0 header is at bytes 16..20, so `None` until the rest is read.
pub(crate) fn lengths(head: &[u8; 16]) -> Result<(usize, Option<usize>), BadFrame> {
    if &head[..4] != MAGIC {
        return Err(BadFrame(format!("magic {:02x?} is not THFT", &head[..4])));
    }
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (header, body) = match word(4) {
        0 if word(8) == 48 => (48, None),
        0 => return Err(BadFrame(format!("a v0 header of {} bytes", word(8)))),
        1 => (16 + word(8) as usize, Some(word(12) as usize)),
        v => return Err(BadFrame(format!("header version {v}"))),
    };
    if header > MAX_FRAME || body.is_some_and(|b| b > MAX_FRAME) {
        return Err(BadFrame("a frame over 64 MiB".into()));
    }
    Ok((header, body))
}

/// The body length of a v0 header.
pub(crate) fn v0_body(header: &[u8]) -> Result<usize, BadFrame> {
    let b = header
        .get(16..20)
        .ok_or_else(|| BadFrame("a short v0 header".into()))?;
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if n > MAX_FRAME {
        return Err(BadFrame("a body over 64 MiB".into()));
    }
    Ok(n)
}

/// The request in `header` and `body`.
pub(crate) fn request(header: &[u8], body: &[u8]) -> Result<Request, BadFrame> {
    let bad = |e: super::reader::Abort| BadFrame(e.to_string());
    let mut h = CppReader::new(header);
    h.take_header()?;
    let gpid = if header.len() == 48 && header[4..8] == [0, 0, 0, 0] {
        h.i32().map_err(bad)?; // header length
        h.i32().map_err(bad)?; // header crc
        h.i32().map_err(bad)?; // body length
        h.i32().map_err(bad)?; // body crc
        (h.i32().map_err(bad)?, h.i32().map_err(bad)?)
    } else {
        h.i32().map_err(bad)?; // meta length
        h.i32().map_err(bad)?; // body length
        let mut g = (0, 0);
        loop {
            let (t, id) = h.field_begin().map_err(bad)?;
            match (t, id) {
                (ty::STOP, _) => break,
                (ty::I32, 1) => g.0 = h.i32().map_err(bad)?,
                (ty::I32, 2) => g.1 = h.i32().map_err(bad)?,
                (t, _) => h.skip(t).map_err(bad)?,
            }
        }
        g
    };
    let mut r = CppReader::new(body);
    let word = r.i32().map_err(bad)? as u32;
    if word & 0xffff_0000 != 0x8001_0000 {
        return Err(BadFrame(format!("not a strict message: {word:#010x}")));
    }
    let kind = (word & 0xff) as u8;
    if kind != 1 && kind != 4 {
        return Err(BadFrame(format!("message type {kind} is not a call")));
    }
    let rpc = r.string().map_err(bad)?;
    let seqid = r.i32().map_err(bad)?;
    Ok(Request {
        rpc,
        seqid,
        gpid,
        args: body[r.position()..].to_vec(),
    })
}

impl CppReader<'_> {
    /// The magic and the version word, checked by [`lengths`] already.
    fn take_header(&mut self) -> Result<(), BadFrame> {
        self.i32()
            .and_then(|_| self.i32())
            .map(drop)
            .map_err(|e| BadFrame(e.to_string()))
    }
}

/// What a response carries in its field 0.
#[derive(Debug)]
pub(crate) enum Result0 {
    /// A struct, its fields and STOP written already.
    Struct(Out),
    /// A string (a remote command's answer).
    String(String),
    /// Nothing: the RPC layer's error says it all.
    None,
}

/// A response frame.
pub(crate) fn response(rpc: &str, seqid: i32, error: &str, result: Result0) -> Vec<u8> {
    let mut o = Out::new();
    o.u32(0)
        .string(error)
        .message_begin(&format!("{rpc}_ACK"), 2, seqid);
    match result {
        Result0::Struct(s) => {
            o.field(ty::STRUCT, 0).append(s).stop();
        }
        Result0::String(s) => {
            o.field(ty::STRING, 0).string(&s).stop();
        }
        Result0::None => {}
    }
    let mut bytes = o.into_bytes();
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}
