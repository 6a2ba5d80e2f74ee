//! The quiesce: a forced snapshot of every partition a tablet holds, so that its restart
//! loads the snapshot and replays little (docs/upstream/openmldb.md §2.11).
//!
//! `MakeSnapshot` only queues the work on the tablet's snapshot pool of one thread and
//! answers 0 (`TabletImpl::MakeSnapshot` @v0.9.2): a partition still queued shows
//! `kTableNormal`, so the state says nothing. What says it is done is the snapshot's
//! MANIFEST (`GetManifest`), once its offset reaches the one asked for. A request at or below
//! the MANIFEST's offset does nothing, so it is not sent. While the partition's state is not
//! normal (the nightly snapshot, a load, a paused snapshot) the tablet answers 105: the
//! request is sent again at the next look.

use std::collections::BTreeMap;

use rollout_core::NodeId;

use crate::api::{
    GetManifestResponse, GetTableStatusResponse, MakeSnapshotRequest, Status, TidPid, code,
};
use crate::cluster::{AskedOf, NodeFactory, OpenMldbCluster};
use crate::error::OpenMldbError;

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// Asks `node` for a snapshot of each memory partition it holds up to its current
    /// offset, where that is past the snapshot it has. Disk partitions are left out: their
    /// restart replays nothing into memory, and their snapshot takes no offset
    /// (`DiskTableSnapshot::MakeSnapshot` refuses one silently, @v0.9.2), nor is their
    /// MANIFEST under the memory root `GetManifest` reads by default.
    pub(crate) async fn request_snapshots(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        let e = self.endpoint(node.as_str());
        let r: GetTableStatusResponse = e
            .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
            .await?;
        let mut asked = AskedOf::new();
        for s in r.all_table_status.iter().filter(|s| s.in_memory()) {
            let m: GetManifestResponse = e
                .call(
                    "TabletServer",
                    "GetManifest",
                    &TidPid {
                        tid: s.tid,
                        pid: s.pid,
                    },
                )
                .await?;
            if s.offset <= m.manifest.offset {
                continue;
            }
            let refused = self.make_snapshot(node, s.tid, s.pid, s.offset).await?;
            asked.insert((s.tid, s.pid), (s.offset, refused));
        }
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), asked);
        Ok(())
    }

    /// `MakeSnapshot`: `true` when the tablet refused it for now (105).
    async fn make_snapshot(
        &self,
        node: &NodeId,
        tid: u32,
        pid: u32,
        offset: u64,
    ) -> Result<bool, OpenMldbError> {
        let r: Result<Status, _> = self
            .endpoint(node.as_str())
            .call(
                "TabletServer",
                "MakeSnapshot",
                &MakeSnapshotRequest { tid, pid, offset },
            )
            .await;
        match r {
            Ok(_) => Ok(false),
            Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_STATUS_IS_NOT_KNORMAL => {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// What keeps `node`'s snapshots from being done: the first partition whose MANIFEST is
    /// below the offset asked for (one refused is asked again); `None` when all are done.
    pub(crate) async fn snapshots_pending(
        &self,
        node: &NodeId,
    ) -> Result<Option<String>, OpenMldbError> {
        let asked = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
            .unwrap_or_default();
        let mut left = BTreeMap::new();
        for ((tid, pid), (offset, refused)) in asked {
            let m: GetManifestResponse = self
                .endpoint(node.as_str())
                .call("TabletServer", "GetManifest", &TidPid { tid, pid })
                .await?;
            if m.manifest.offset >= offset {
                continue;
            }
            let refused = if refused {
                self.make_snapshot(node, tid, pid, offset).await?
            } else {
                false
            };
            left.insert((tid, pid), (offset, refused));
        }
        let first = left.iter().next().map(|((tid, pid), (offset, refused))| {
            format!(
                "{node}: {} snapshot(s) not written yet, such as tid {tid} pid {pid} up to \
                 offset {offset}{}",
                left.len(),
                if *refused {
                    " (the tablet refused it for now, 105: asked again)"
                } else {
                    ""
                }
            )
        });
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), left);
        Ok(first)
    }
}
