//! Cross-crate and end-to-end tests for rollout.
//!
//! The workspace README is compiled here as a doctest, so its example stays true.
#![doc = include_str!("../README.md")]
