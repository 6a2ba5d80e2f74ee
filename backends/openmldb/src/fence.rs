//! The zero-loss leader move (ARCHITECTURE.md, "Zero-loss leader moves on OpenMLDB"): wait
//! for a follower at the leader's offset (`GetTableFollower` on the leader), fence the leader
//! on its tablet (`ChangeRole` to follower: writes refused, replication stopped), check both
//! offsets again (`GetTableStatus`), then ChangeLeader with that follower as the explicit
//! candidate. When the offsets differ after the fence, it is lifted (`ChangeRole` to leader
//! with the old term and followers, valid before any SelectLeader) and the move tries again;
//! when writes keep followers behind, the tablet is held in follower mode (`SetMode`) for a
//! moment so that they catch up, and released after the fence.

use crate::api::{
    ChangeLeaderRequest, ChangeRoleRequest, GetTableFollowerResponse, GetTableStatusResponse,
    Status, TidPid, code,
};
use crate::cluster::{NodeFactory, OpenMldbCluster};
use crate::error::OpenMldbError;

/// One partition to move: (db, table, tid, pid).
pub(crate) type Part = (String, String, u32, u32);

/// Polls without a follower at the leader's offset before the tablet is held.
const POLLS_UNHELD: u32 = 5;

/// Fences lifted (a write slipped in) before a move gives up.
const MOVE_TRIES: u32 = 5;

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// Moves the leadership of `part` from `from` to `to` (or any follower at its offset).
    /// `Ok(false)` when `from` no longer leads it (someone moved it already). A write that
    /// slips in between the last offset check and the fence lifts the fence and the move
    /// tries again, holding the tablet from then on, up to `MOVE_TRIES` times.
    pub(crate) async fn fenced_move(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
    ) -> Result<bool, OpenMldbError> {
        // ChangeLeader is refused (301) while auto_failover is on: never fence then.
        if self.auto_failover().await? != "false" {
            return Err(OpenMldbError::Move {
                table: part.1.clone(),
                pid: part.3,
                reason: format!(
                    "auto_failover is on, so the nameserver would refuse the ChangeLeader away \
                     from {from}; nothing was fenced (the rollout turns it off first)"
                ),
            });
        }
        let mut last = None;
        for attempt in 0..MOVE_TRIES {
            match self.try_move(part, from, to, attempt > 0).await {
                Err(e @ OpenMldbError::Move { .. })
                    if e.to_string().contains("the fence was lifted") =>
                {
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn try_move(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
        hold_now: bool,
    ) -> Result<bool, OpenMldbError> {
        let (db, table, tid, pid) = part;
        let leader = self.endpoint(from);
        // The op mark is read before the fence: nothing but the move's own RPCs may run
        // while the partition refuses writes.
        let mark = self
            .ops(Some((db, table, *pid)))
            .await?
            .iter()
            .map(|o| o.op_id)
            .max()
            .unwrap_or(0);
        let deadline = tokio::time::Instant::now() + self.timing.catch_up;
        let mut polls = if hold_now { POLLS_UNHELD } else { 0 };
        let mut held = false;
        let result = loop {
            if polls >= POLLS_UNHELD && !held {
                // Writes outrun replication: hold the tablet so the followers catch up.
                let _: Status = leader
                    .call(
                        "TabletServer",
                        "SetMode",
                        &serde_json::json!({"follower": true}),
                    )
                    .await?;
                held = true;
            }
            let f: Result<GetTableFollowerResponse, _> = leader
                .call(
                    "TabletServer",
                    "GetTableFollower",
                    &TidPid {
                        tid: *tid,
                        pid: *pid,
                    },
                )
                .await;
            let f = match f {
                Ok(f) => f,
                Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_IS_FOLLOWER => {
                    // Moved already, or fenced by an earlier attempt that did not finish (a
                    // retried or resumed drain): the nameserver says which.
                    break match self.stale_fence(part, from, to).await {
                        Ok(Some(found)) => Ok(Some(found)),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                }
                Err(e) => break Err(e),
            };
            let candidate = f
                .follower_info
                .iter()
                .find(|x| x.offset == f.offset && to.is_none_or(|t| t == x.endpoint))
                .map(|x| x.endpoint.clone());
            if let Some(c) = candidate {
                break Ok(Some((
                    c,
                    f.follower_info
                        .iter()
                        .map(|x| x.endpoint.clone())
                        .collect::<Vec<_>>(),
                    false,
                )));
            }
            polls += 1;
            if tokio::time::Instant::now() >= deadline {
                break Err(OpenMldbError::Move {
                    table: table.clone(),
                    pid: *pid,
                    reason: format!(
                        "no follower reached the offset {} of the leader on {from} within {} s; \
                         nothing was moved",
                        f.offset,
                        self.timing.catch_up.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        };
        let found = match result {
            Ok(Some(found)) if found.2 => found,
            Ok(Some(found)) => {
                // Fence first, then let the rest of the tablet write again.
                let fenced = self.fence(from, *tid, *pid).await;
                if held {
                    self.release(from).await;
                }
                fenced?;
                found
            }
            Ok(None) => {
                if held {
                    self.release(from).await;
                }
                return Ok(false);
            }
            Err(e) => {
                if held {
                    self.release(from).await;
                }
                return Err(e);
            }
        };
        let (candidate, followers, _) = found;
        // A put that passed its check just before the fence may still have appended: compare
        // again, after the fence.
        let (mine, theirs) = futures_util::future::join(
            self.offset_on(from, *tid, *pid),
            self.offset_on(&candidate, *tid, *pid),
        )
        .await;
        let (mine, theirs) = (mine?, theirs?);
        if mine != Some(theirs.unwrap_or(u64::MAX)) {
            self.unfence(part, from, &followers).await?;
            return Err(OpenMldbError::Move {
                table: table.clone(),
                pid: *pid,
                reason: format!(
                    "after the fence the leader on {from} is at {mine:?} and {candidate} at \
                     {theirs:?}; the fence was lifted and nothing moved"
                ),
            });
        }
        let req = ChangeLeaderRequest {
            name: table.clone(),
            pid: *pid,
            candidate_leader: candidate.clone(),
            db: db.clone(),
        };
        let changed = self.change_leader(&req, (db, table, *pid), mark).await;
        if let Err(e) = changed {
            // Whether SelectLeader ran is unknown: leave the fence (no write is taken that
            // could be lost) and say so.
            return Err(OpenMldbError::Move {
                table: table.clone(),
                pid: *pid,
                reason: format!(
                    "ChangeLeader to {candidate} failed ({e}); the old leader on {from} stays \
                     fenced (it takes no writes): run `abort` or recover the partition"
                ),
            });
        }
        Ok(true)
    }

    /// ChangeLeader and the wait for its op. A nameserver with no leader for a moment
    /// (code 300 from every one) did not take the call: it is sent again within the op
    /// deadline. A new leader forgets the finished ops of the old one, so when no op shows,
    /// the partition's leader says whether it moved.
    async fn change_leader(
        &self,
        req: &ChangeLeaderRequest,
        on: (&str, &str, u32),
        mark: u64,
    ) -> Result<(), OpenMldbError> {
        let deadline = tokio::time::Instant::now() + self.timing.op;
        let sent = loop {
            match self.ns::<_, Status>("ChangeLeader", req).await {
                Ok(_) => break Ok(()),
                Err(e) if e.rediscover() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.timing.poll).await;
                }
                Err(e) => break Err(e),
            }
        };
        // A call refused after an earlier one went through (its answer lost) is judged by
        // the partition's leader, like a wait for an op a new leader forgot.
        let waited = match sent {
            Ok(()) => self.wait_ops(on, mark, "ChangeLeader").await,
            Err(e) => Err(e),
        };
        match waited {
            Ok(()) => Ok(()),
            Err(e) => {
                let moved = self.tables().await?.iter().any(|t| {
                    t.name == on.1
                        && t.db == on.0
                        && t.table_partition.iter().any(|p| {
                            p.pid == on.2
                                && p.partition_meta.iter().any(|m| {
                                    m.endpoint == req.candidate_leader && m.is_leader && m.is_alive
                                })
                        })
                });
                if moved { Ok(()) } else { Err(e) }
            }
        }
    }

    /// A leader in follower mode on its tablet that the nameserver still records as the
    /// alive leader: a fence of an earlier attempt. `Some((candidate, followers, true))` when
    /// a follower has its offset (the move goes on from the ChangeLeader); otherwise the fence
    /// is lifted and the move fails, to be tried again. `None` when the leadership moved.
    async fn stale_fence(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
    ) -> Result<Option<(String, Vec<String>, bool)>, OpenMldbError> {
        let (db, table, tid, pid) = part;
        let followers: Vec<String> = match self
            .tables()
            .await?
            .into_iter()
            .find(|t| &t.name == table && &t.db == db)
            .and_then(|t| t.table_partition.into_iter().find(|p| p.pid == *pid))
        {
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
            _ => return Ok(None),
        };
        let mine = self.offset_on(from, *tid, *pid).await?;
        for f in followers
            .iter()
            .filter(|f| to.is_none_or(|t| t == f.as_str()))
        {
            if mine.is_some() && self.offset_on(f, *tid, *pid).await? == mine {
                return Ok(Some((f.clone(), followers.clone(), true)));
            }
        }
        self.unfence(part, from, &followers).await?;
        Err(OpenMldbError::Move {
            table: table.clone(),
            pid: *pid,
            reason: format!(
                "the leader on {from} was left fenced with no follower at its offset {mine:?}; \
                 the fence was lifted and the move is tried again"
            ),
        })
    }

    /// Lifts every fence left on `node` by an interrupted move: partitions the nameserver
    /// records it as the alive leader of while its tablet holds them in follower mode, and
    /// with no op on them still queued or running (a ChangeLeader that runs after the fence
    /// is lifted would move the leader unfenced). Returns how many it lifted.
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
            let followers: Vec<String> = tables
                .iter()
                .find(|t| t.name == p.1 && t.db == p.0)
                .and_then(|t| t.table_partition.iter().find(|x| x.pid == p.3))
                .map(|x| {
                    x.partition_meta
                        .iter()
                        .filter(|m| m.endpoint != node && m.is_alive)
                        .map(|m| m.endpoint.clone())
                        .collect()
                })
                .unwrap_or_default();
            self.unfence(p, node, &followers).await?;
            lifted += 1;
        }
        Ok(lifted)
    }

    async fn fence(&self, at: &str, tid: u32, pid: u32) -> Result<(), OpenMldbError> {
        let _: Status = self
            .endpoint(at)
            .call(
                "TabletServer",
                "ChangeRole",
                &ChangeRoleRequest {
                    tid,
                    pid,
                    mode: "kTableFollower",
                    term: None,
                    replicas: Vec::new(),
                },
            )
            .await?;
        Ok(())
    }

    /// Lifts a fence: the old term from the nameserver's term history, the followers as
    /// they were.
    pub(crate) async fn unfence(
        &self,
        part: &Part,
        at: &str,
        followers: &[String],
    ) -> Result<(), OpenMldbError> {
        let (_, table, tid, pid) = part;
        let term = self
            .tables()
            .await?
            .into_iter()
            .find(|t| &t.name == table)
            .and_then(|t| t.table_partition.into_iter().find(|p| p.pid == *pid))
            .and_then(|p| p.term_offset.last().map(|t| t.term));
        let r: Result<Status, _> = self
            .endpoint(at)
            .call(
                "TabletServer",
                "ChangeRole",
                &ChangeRoleRequest {
                    tid: *tid,
                    pid: *pid,
                    mode: "kTableLeader",
                    term,
                    replicas: followers.to_vec(),
                },
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_IS_LEADER => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, at: &str) {
        let r: Result<Status, _> = self
            .endpoint(at)
            .call(
                "TabletServer",
                "SetMode",
                &serde_json::json!({"follower": false}),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(tablet = at, error = %e, "could not release the tablet's write hold");
        }
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
