//! What the tests against a real ZooKeeper share.
#![allow(dead_code, unreachable_pub)]

pub use rollout_zookeeper::testing::zookeeper;
