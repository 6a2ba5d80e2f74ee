//! The data path of an OpenMLDB emulator's tablets: a `Put` or `Delete` a client outside
//! the world sends to a given tablet, decided by what that tablet holds (`TabletImpl::Put`,
//! `TabletImpl::Delete` @v0.9.2 and @v0.8.5), not by where the world's own clients route.

use rollout_core::NodeId;

use crate::cluster::SimCluster;
use crate::emulation_openmldb::{node_of, part_of};

impl SimCluster {
    /// TabletServer `Put` of a client outside the world on tablet `node`: the write's
    /// sequence number, recorded in the world's ledger like its own clients' writes; check
    /// it later with [`SimCluster::holds`]. Decided by what the tablet holds (see
    /// `World::tablet_put`): a deposed leader that was never fenced still takes it.
    ///
    /// # Errors
    /// The tablet's return code and message: 100 an unknown partition or one the tablet
    /// has not loaded, 103 not leader there (or fenced), 453 the tablet held in follower
    /// mode.
    pub fn openmldb_put(&self, table: u32, pid: u32, node: &NodeId) -> Result<u32, (i32, String)> {
        let mut w = self.world();
        let part = part_of(&w, table, pid).map_err(|_| (100, "table does not exist".into()))?;
        let n = node_of(&w, node).map_err(|_| (100, "table does not exist".into()))?;
        let r = w.tablet_put(part, n).map_err(|(c, m)| (c, m.to_string()));
        w.touch(part);
        r
    }

    /// The checks tablet `node` makes before a `Put` or `Delete` of the partition, without
    /// writing (see [`SimCluster::openmldb_put`]).
    ///
    /// # Errors
    /// The tablet's return code and message, as for [`SimCluster::openmldb_put`].
    pub fn openmldb_put_check(
        &self,
        table: u32,
        pid: u32,
        node: &NodeId,
    ) -> Result<(), (i32, String)> {
        let w = self.world();
        let part = part_of(&w, table, pid).map_err(|_| (100, "table does not exist".into()))?;
        let n = node_of(&w, node).map_err(|_| (100, "table does not exist".into()))?;
        w.tablet_check(part, n).map_err(|(c, m)| (c, m.to_string()))
    }
}
