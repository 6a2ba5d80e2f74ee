//! The data path of an OpenMLDB emulator's tablets: a `Put` or `Delete` a client outside
//! the world sends to a given tablet, decided by what that tablet holds (`TabletImpl::Put`,
//! `TabletImpl::Delete` @v0.9.2 and @v0.8.5), not by where the world's own clients route.

use rollout_core::NodeId;

use crate::cluster::SimCluster;
use crate::emulation_openmldb::{node_of, part_of};
use crate::world::World;

/// The world's partition and node a tablet request names; a tablet without them answers
/// 100 (`kTableIsNotExist`).
fn locate(w: &World, table: u32, pid: u32, node: &NodeId) -> Result<(u32, u32), (i32, String)> {
    let missing = |_| (100, "table does not exist".to_string());
    Ok((
        part_of(w, table, pid).map_err(missing)?,
        node_of(w, node).map_err(missing)?,
    ))
}

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
        let (part, n) = locate(&w, table, pid, node)?;
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
        let (part, n) = locate(&w, table, pid, node)?;
        w.tablet_check(part, n).map_err(|(c, m)| (c, m.to_string()))
    }
}
