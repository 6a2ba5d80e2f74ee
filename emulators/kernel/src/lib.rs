//! What the rollout emulators share.
//!
//! An emulator serves one `rollout-sim` world over a server's real wire protocol on loopback,
//! one port per emulated process.
//! This crate holds what does not depend on the server: [`processes`], which makes each
//! emulated process a real OS process for the serve mode of the reference binaries.

pub mod processes;
