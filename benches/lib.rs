//! Criterion benches for rollout; run them with `cargo bench -p rollout-benches`.
