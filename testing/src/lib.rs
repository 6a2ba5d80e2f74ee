//! The test rig of `rollout-process`, kept out of the product: the `rollout-test-server`
//! binary (a stand-in database process), the `start.sh` fixture modelled on OpenMLDB's, and
//! the tests that drive them through real processes, a real OpenSSH server and the node
//! agent (`tests/`).
