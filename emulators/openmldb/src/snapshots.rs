//! Each tablet's snapshots, as `TabletImpl::MakeSnapshot`, `GetManifest` and
//! `GetAllSnapshotOffset` show them (docs/upstream/openmldb.md §2.11, from
//! `src/tablet/tablet_impl.cc` and `src/storage/mem_table_snapshot.cc` @v0.9.2).
//!
//! A forced snapshot is queued on the tablet's snapshot pool of one thread
//! (`snapshot_pool_size` 1): the partition is `kMakingSnapshot` only while its own work
//! runs (the ones behind it still show `kTableNormal`), and a second request for it then
//! answers 105. One at or below the current MANIFEST offset does nothing, though it answers
//! 0. The work finishes when the world's flush of the tablet does; the MANIFEST then holds
//! the offset asked for. A MANIFEST outlives the process (it is on disk).

use std::collections::{BTreeMap, VecDeque};

use rollout_core::NodeId;

/// A partition of a tablet: (tablet, tid, pid).
type Key = (NodeId, u32, u32);

/// The snapshots of every tablet.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    /// MANIFEST (offset, term) per partition on a tablet.
    manifest: BTreeMap<Key, (u64, u64)>,
    /// Work queued on each tablet's pool: (tid, pid, offset, term), the running one first.
    queued: BTreeMap<NodeId, VecDeque<(u32, u32, u64, u64)>>,
}

/// What a MakeSnapshot request comes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Make {
    /// Queued: the tablet's flush should start.
    Queued,
    /// Nothing to do (at or below the MANIFEST, or no offset), answered 0.
    Nothing,
    /// The partition's snapshot is running: 105.
    Busy,
}

impl Snapshots {
    /// A forced snapshot of `(tid, pid)` on `tablet` up to `offset`.
    pub(crate) fn make(
        &mut self,
        tablet: &NodeId,
        (tid, pid): (u32, u32),
        offset: Option<u64>,
        term: u64,
    ) -> Make {
        let q = self.queued.entry(tablet.clone()).or_default();
        if q.front().is_some_and(|&(t, p, ..)| t == tid && p == pid) {
            return Make::Busy;
        }
        let at = self
            .manifest
            .get(&(tablet.clone(), tid, pid))
            .map_or(0, |m| m.0);
        match offset {
            Some(o) if o > at => {
                q.push_back((tid, pid, o, term));
                Make::Queued
            }
            _ => Make::Nothing,
        }
    }

    /// The tablet's flush is done: every queued snapshot is written.
    pub(crate) fn flushed(&mut self, tablet: &NodeId) {
        if let Some(q) = self.queued.remove(tablet) {
            for (tid, pid, offset, term) in q {
                self.manifest
                    .insert((tablet.clone(), tid, pid), (offset, term));
            }
        }
    }

    /// The process is gone: its queue with it (the MANIFESTs stay).
    pub(crate) fn process_gone(&mut self, tablet: &NodeId) {
        self.queued.remove(tablet);
    }

    /// Whether `(tid, pid)`'s snapshot is the one running on `tablet`.
    pub(crate) fn running(&self, tablet: &NodeId, tid: u32, pid: u32) -> bool {
        self.queued
            .get(tablet)
            .and_then(VecDeque::front)
            .is_some_and(|&(t, p, ..)| t == tid && p == pid)
    }

    /// Whether anything is queued on `tablet`.
    pub(crate) fn busy(&self, tablet: &NodeId) -> bool {
        self.queued.get(tablet).is_some_and(|q| !q.is_empty())
    }

    /// The MANIFEST of `(tid, pid)` on `tablet`: offset and term, (0, 0) without one.
    pub(crate) fn manifest(&self, tablet: &NodeId, tid: u32, pid: u32) -> (u64, u64) {
        self.manifest
            .get(&(tablet.clone(), tid, pid))
            .copied()
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use rollout_core::NodeId;

    use super::{Make, Snapshots};

    #[test]
    fn a_snapshot_is_queued_runs_alone_and_lands_in_the_manifest() {
        let t = NodeId::new("tablet-1:1");
        let mut s = Snapshots::default();
        assert_eq!(s.make(&t, (1, 0), Some(10), 3), Make::Queued);
        assert_eq!(s.make(&t, (1, 1), Some(7), 3), Make::Queued);
        assert_eq!(s.make(&t, (1, 0), Some(12), 3), Make::Busy);
        assert!(s.running(&t, 1, 0) && !s.running(&t, 1, 1));
        assert_eq!(s.manifest(&t, 1, 0), (0, 0));
        s.flushed(&t);
        assert_eq!(s.manifest(&t, 1, 0), (10, 3));
        assert_eq!(s.make(&t, (1, 0), Some(10), 3), Make::Nothing);
        assert_eq!(s.make(&t, (1, 0), None, 3), Make::Nothing);
    }
}
