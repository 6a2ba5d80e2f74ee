//! Taking a fence down, and the tablet-wide write hold (see `fence.rs` for the move).
//!
//! A fence is never lifted over followers that hold a higher term than the leader: a
//! ChangeLeader whose SelectLeader ran (`term + 1` to every follower, `FollowOfNoOne`) before
//! it failed leaves them refusing the old leader, whose writes would then be acknowledged and
//! lost (`NameServerImpl::SelectLeader`, `TabletImpl::AppendEntries` @v0.9.2). The move is
//! finished instead, to a follower at the fenced leader's offset; with none there, the fence
//! stays up (no write is taken, none is lost).
//!
//! The hold (`SetMode{follower: true}`) refuses every write on the tablet (453) until
//! released; only the nameserver resets it otherwise, on a `/nodes` change or an election
//! (`NameServerImpl::DistributeTabletMode` @v0.9.2). So a hold whose answer was lost is
//! released all the same, a release is tried again, and `heal` releases every tablet no move
//! holds.

use crate::api::{
    ChangeLeaderRequest, ChangeRoleRequest, GetTableStatusResponse, GetTermPairResponse, Status,
    TidPid, code,
};
use crate::cluster::{NodeFactory, OpenMldbCluster, Part};
use crate::error::OpenMldbError;
use crate::fence::{Follow, partition};

/// Tries of a release before it is left to `heal`.
const RELEASE_TRIES: u32 = 3;

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// A leader in follower mode on its tablet that the nameserver still records as the
    /// alive leader: a fence of an earlier attempt. [`Follow::At`] (found fenced) when an
    /// eligible follower has its offset, and the move goes on from the ChangeLeader;
    /// [`Follow::Moved`] when taking the fence down finished the move instead; otherwise the
    /// fence is lifted and the move fails, to be tried again. [`Follow::Gone`] when the
    /// leadership moved.
    pub(crate) async fn stale_fence(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
    ) -> Result<Follow, OpenMldbError> {
        let (_, table, tid, pid) = part;
        let followers: Vec<String> = match partition(&self.tables().await?, part) {
            Some(p)
                if p.partition_meta
                    .iter()
                    .any(|m| m.endpoint == from && m.is_leader && m.is_alive) =>
            {
                p.partition_meta
                    .iter()
                    .filter(|m| m.endpoint != from && m.is_alive)
                    .map(|m| m.endpoint.clone())
                    .collect()
            }
            _ => return Ok(Follow::Gone),
        };
        let mine = self.offset_on(from, *tid, *pid).await?;
        let (eligible, blocker) = self.eligible_followers(part, from).await?;
        if blocker.is_none() {
            for f in followers
                .iter()
                .filter(|f| to.is_none_or(|t| t == f.as_str()) && eligible.contains(f))
            {
                if mine.is_some() && self.offset_on(f, *tid, *pid).await? == mine {
                    return Ok(Follow::At((f.clone(), followers.clone(), true)));
                }
            }
        }
        if self.unfence(part, from, &followers).await? {
            return Ok(Follow::Moved);
        }
        Err(OpenMldbError::Move {
            table: table.clone(),
            pid: *pid,
            reason: format!(
                "the leader on {from} was left fenced with no follower ready at its offset \
                 {mine:?}; the fence was lifted and the move is tried again"
            ),
        })
    }

    /// Lifts every fence left on `node` by an interrupted move: partitions the nameserver
    /// records it as the alive leader of while its tablet holds them in follower mode, and
    /// with no op on them still queued or running (a ChangeLeader that runs after the fence
    /// is lifted would move the leader unfenced). A fence finished into a move instead has
    /// its old leader recovered as a follower. Returns how many it took down.
    pub(crate) async fn lift_stale_fences(&self, node: &str) -> Result<usize, OpenMldbError> {
        let tables = self.tables().await?;
        let led = crate::view::led_by(&tables, node);
        if led.is_empty() {
            return Ok(0);
        }
        let status: GetTableStatusResponse = self
            .endpoint(node)
            .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
            .await?;
        let mut lifted = 0;
        let mut moved = Vec::new();
        for p in &led {
            let fenced = status
                .all_table_status
                .iter()
                .any(|s| s.tid == p.2 && s.pid == p.3 && s.mode == "kTableFollower");
            // A ChangeLeader still queued or running would follow a lifted fence with an
            // unfenced move: leave that fence up (no write is lost) until the op ends.
            let pending = self
                .ops(Some((&p.0, &p.1, p.3)))
                .await?
                .iter()
                .any(|o| !o.finished());
            if !fenced || pending {
                if fenced {
                    tracing::warn!(tablet = node, table = %p.1, pid = p.3, "a fence stays up while an op on its partition has not finished");
                }
                continue;
            }
            let followers: Vec<String> = partition(&tables, p)
                .map(|x| {
                    x.partition_meta
                        .iter()
                        .filter(|m| m.endpoint != node && m.is_alive)
                        .map(|m| m.endpoint.clone())
                        .collect()
                })
                .unwrap_or_default();
            if self.unfence(p, node, &followers).await? {
                moved.push(p.clone());
            }
            lifted += 1;
        }
        self.recover_replicas(&moved, node).await?;
        Ok(lifted)
    }

    /// Takes the fence on `at` down: `Ok(true)` when the move was finished instead (followers
    /// hold a newer term), `Ok(false)` when the leader leads again, with the partition's
    /// term (the last of its term history, the table found by database and name) and the
    /// followers as they were.
    ///
    /// # Errors
    /// No term in the nameserver's records, or followers at a newer term and none at the
    /// fenced leader's offset, or the finishing ChangeLeader failed: the fence stays up.
    pub(crate) async fn unfence(
        &self,
        part: &Part,
        at: &str,
        followers: &[String],
    ) -> Result<bool, OpenMldbError> {
        let (db, table, tid, pid) = part;
        let tables = self.tables().await?;
        let term = partition(&tables, part).and_then(|p| p.term_offset.last().map(|t| t.term));
        let Some(term) = term else {
            return Err(OpenMldbError::Move {
                table: table.clone(),
                pid: *pid,
                reason: format!(
                    "no term of {db}.{table} partition {pid} in the nameserver's records: the \
                     fence on {at} stays up (a leader re-led without its term would ship \
                     nothing its followers accept)"
                ),
            });
        };
        let mut newer = Vec::new();
        for f in followers {
            let t: GetTermPairResponse = self
                .endpoint(f)
                .call(
                    "TabletServer",
                    "GetTermPair",
                    &TidPid {
                        tid: *tid,
                        pid: *pid,
                    },
                )
                .await?;
            if t.has_table && t.term > term {
                newer.push((f.clone(), t.offset));
            }
        }
        if !newer.is_empty() {
            return self.finish_move(part, at, &newer).await.map(|()| true);
        }
        let r: Result<Status, _> = self
            .endpoint(at)
            .call(
                "TabletServer",
                "ChangeRole",
                &ChangeRoleRequest {
                    tid: *tid,
                    pid: *pid,
                    mode: "kTableLeader",
                    term: Some(term),
                    replicas: followers.to_vec(),
                },
            )
            .await;
        match r {
            Ok(_) => Ok(false),
            Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_IS_LEADER => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Followers took a newer term from a SelectLeader whose ChangeLeader failed: the
    /// leadership goes to one at the fenced leader's offset (SelectLeader forces a named
    /// candidate whatever its offset, so one behind would drop acknowledged writes).
    async fn finish_move(
        &self,
        part: &Part,
        at: &str,
        newer: &[(String, u64)],
    ) -> Result<(), OpenMldbError> {
        let (db, table, tid, pid) = part;
        let mine = self.offset_on(at, *tid, *pid).await?;
        let Some((candidate, _)) = newer.iter().find(|(_, o)| Some(*o) == mine) else {
            return Err(OpenMldbError::Move {
                table: table.clone(),
                pid: *pid,
                reason: format!(
                    "followers of {db}.{table} partition {pid} hold a newer term than the \
                     fenced leader on {at} (at {mine:?}), and none is at its offset (they are \
                     at {:?}): the fence stays up, no write is taken",
                    newer.iter().map(|(_, o)| o).collect::<Vec<_>>()
                ),
            });
        };
        tracing::warn!(tablet = at, table = %table, pid, %candidate, "followers hold a newer term than the fenced leader: the move is finished instead of lifting the fence");
        let mark = self
            .ops(Some((db, table, *pid)))
            .await?
            .iter()
            .map(|o| o.op_id)
            .max()
            .unwrap_or(0);
        let req = ChangeLeaderRequest {
            name: table.clone(),
            pid: *pid,
            candidate_leader: candidate.clone(),
            db: db.clone(),
        };
        self.change_leader(&req, (db, table, *pid), mark)
            .await
            .map_err(|e| OpenMldbError::Move {
                table: table.clone(),
                pid: *pid,
                reason: format!(
                    "followers hold a newer term than the fenced leader on {at}, and the \
                     ChangeLeader to {candidate} failed: {e}; the fence stays up"
                ),
            })
    }

    /// Holds `at` in follower mode (`SetMode`) for one more move. A hold whose answer did not
    /// come may have been taken: it is released before the error is returned.
    pub(crate) async fn hold(&self, at: &str) -> Result<(), OpenMldbError> {
        let first = {
            let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            let n = holds.entry(at.to_string()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            let r: Result<Status, _> = self
                .endpoint(at)
                .call(
                    "TabletServer",
                    "SetMode",
                    &serde_json::json!({"follower": true}),
                )
                .await;
            if let Err(e) = r {
                self.release(at).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends one move's hold on `at`; the last one releases the tablet, tried
    /// [`RELEASE_TRIES`] times (`heal` releases it otherwise).
    pub(crate) async fn release(&self, at: &str) {
        let last = {
            let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            let n = holds.entry(at.to_string()).or_default();
            *n = n.saturating_sub(1);
            *n == 0
        };
        if !last {
            return;
        }
        for attempt in 1..=RELEASE_TRIES {
            let r: Result<Status, _> = self
                .endpoint(at)
                .call(
                    "TabletServer",
                    "SetMode",
                    &serde_json::json!({"follower": false}),
                )
                .await;
            match r {
                Ok(_) => return,
                Err(e) if attempt == RELEASE_TRIES => {
                    tracing::warn!(tablet = at, error = %e, "could not release the tablet's write hold; heal releases it");
                }
                Err(_) => tokio::time::sleep(self.timing.poll).await,
            }
        }
    }

    /// Releases the write hold of every tablet in `healthy` that no move of this run holds
    /// (a hold a crashed run or a lost answer left).
    pub(crate) async fn release_stray_holds(
        &self,
        healthy: &[String],
    ) -> Result<(), OpenMldbError> {
        for t in healthy {
            let held = self
                .holds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(t)
                .is_some_and(|&n| n > 0);
            if !held {
                let _: Status = self
                    .endpoint(t)
                    .call(
                        "TabletServer",
                        "SetMode",
                        &serde_json::json!({"follower": false}),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// A partition's offset on a tablet; `None` when the tablet has not loaded it.
    pub(crate) async fn offset_on(
        &self,
        at: &str,
        tid: u32,
        pid: u32,
    ) -> Result<Option<u64>, OpenMldbError> {
        let r: GetTableStatusResponse = self
            .endpoint(at)
            .call("TabletServer", "GetTableStatus", &TidPid { tid, pid })
            .await?;
        Ok(r.all_table_status
            .iter()
            .find(|s| s.tid == tid && s.pid == pid)
            .map(|s| s.offset))
    }
}
