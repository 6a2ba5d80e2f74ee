//! The emulator's side of the wire: rDSN's framing, thrift as the servers' C++ reads and
//! writes it, and the structs of each version's IDL. Nothing here is shared with the
//! backend's client codec, so that a misunderstanding in one is not copied into the other.

pub(crate) mod frame;
pub(crate) mod idl;
pub(crate) mod out;
pub(crate) mod reader;
