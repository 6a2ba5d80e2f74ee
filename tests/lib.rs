//! Cross-crate and end-to-end tests for rollout live in `tests/`.
