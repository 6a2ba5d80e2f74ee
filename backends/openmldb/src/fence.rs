//! The zero-loss leader move (ARCHITECTURE.md, "Zero-loss leader moves on OpenMLDB"): wait
//! for a follower at the leader's offset (`GetTableFollower` on the leader), check that the
//! nameserver will take it as the candidate (an alive non-leader replica on a healthy tablet,
//! else ChangeLeader is refused with 305 or 310 and nothing may be fenced), fence the leader
//! on its tablet (`ChangeRole` to follower: writes refused, replication stopped), check both
//! offsets again (`GetTableStatus`), then ChangeLeader with that follower as the explicit
//! candidate. When the offsets differ after the fence, it is lifted (`ChangeRole` to leader
//! with the partition's term, found by database and table) and the move tries again; when
//! writes keep followers behind, the tablet is held in follower mode (`SetMode`) for a
//! moment so that they catch up, released when the last move holding it ends.
//!
//! A fence is never lifted over followers that hold a higher term than the leader: a
//! ChangeLeader whose SelectLeader ran (`term + 1` to every follower, `FollowOfNoOne`) before
//! it failed leaves them refusing the old leader, whose writes would then be acknowledged and
//! lost (`NameServerImpl::SelectLeader`, `TabletImpl::AppendEntries` @v0.9.2). The move is
//! finished instead, to the follower with the highest offset.

use crate::api::{
    ChangeLeaderRequest, ChangeRoleRequest, GetTableFollowerResponse, GetTableStatusResponse,
    GetTermPairResponse, Status, TableInfo, TidPid, code,
};
use crate::cluster::{NodeFactory, OpenMldbCluster};
use crate::error::OpenMldbError;

/// One partition to move: (db, table, tid, pid).
pub(crate) type Part = (String, String, u32, u32);

/// Polls without a follower at the leader's offset before the tablet is held.
const POLLS_UNHELD: u32 = 5;

/// Fences lifted (a write slipped in) before a move gives up.
const MOVE_TRIES: u32 = 5;

/// A follower found at the leader's offset: it, every follower, and whether the leader was
/// found fenced already (a move interrupted after its fence).
type Found = (String, Vec<String>, bool);

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
        let (db, table, _, pid) = part;
        // The op mark is read before the fence: nothing but the move's own RPCs may run
        // while the partition refuses writes.
        let mark = self
            .ops(Some((db, table, *pid)))
            .await?
            .iter()
            .map(|o| o.op_id)
            .max()
            .unwrap_or(0);
        let mut held = false;
        let found = self
            .await_follower(part, from, to, hold_now, &mut held)
            .await;
        let found = match found {
            Ok(Some(found)) if found.2 => found,
            Ok(Some(found)) => {
                // Fence first, then let the rest of the tablet write again.
                let fenced = self.fence(from, part.2, *pid).await;
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
            self.offset_on(from, part.2, *pid),
            self.offset_on(&candidate, part.2, *pid),
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

    /// Polls the leader until a follower (`to`, or any) has its offset and the nameserver
    /// would take it as the candidate; holds the tablet (`SetMode`) from the
    /// `POLLS_UNHELD`th poll on. `Ok(None)` when `from` no longer leads the partition.
    async fn await_follower(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
        hold_now: bool,
        held: &mut bool,
    ) -> Result<Option<Found>, OpenMldbError> {
        let (_, table, tid, pid) = part;
        let leader = self.endpoint(from);
        let deadline = tokio::time::Instant::now() + self.timing.catch_up;
        let mut polls = if hold_now { POLLS_UNHELD } else { 0 };
        loop {
            if polls >= POLLS_UNHELD && !*held {
                // Writes outrun replication: hold the tablet so the followers catch up.
                self.hold(from).await?;
                *held = true;
            }
            let f: GetTableFollowerResponse = match leader
                .call(
                    "TabletServer",
                    "GetTableFollower",
                    &TidPid {
                        tid: *tid,
                        pid: *pid,
                    },
                )
                .await
            {
                Ok(f) => f,
                Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_IS_FOLLOWER => {
                    // Moved already, or fenced by an earlier attempt that did not finish (a
                    // retried or resumed drain): the nameserver says which.
                    return self.stale_fence(part, from, to).await;
                }
                Err(e) => return Err(e),
            };
            // The nameserver takes a candidate only if it records it as an alive follower on
            // a healthy tablet (`CreateChangeLeaderOP`; 305 or 310 otherwise): one the
            // leader still ships to may be marked dead (being recovered, or a temporary
            // replica not caught up).
            let at_offset: Vec<&str> = f
                .follower_info
                .iter()
                .filter(|x| x.offset == f.offset && to.is_none_or(|t| t == x.endpoint))
                .map(|x| x.endpoint.as_str())
                .collect();
            let candidate = if at_offset.is_empty() {
                None
            } else {
                let eligible = self.eligible_followers(part, from).await?;
                at_offset
                    .into_iter()
                    .find(|x| eligible.iter().any(|e| e == x))
                    .map(str::to_string)
            };
            if let Some(c) = candidate {
                let followers = f.follower_info.iter().map(|x| x.endpoint.clone()).collect();
                return Ok(Some((c, followers, false)));
            }
            polls += 1;
            if tokio::time::Instant::now() >= deadline {
                return Err(OpenMldbError::Move {
                    table: table.clone(),
                    pid: *pid,
                    reason: format!(
                        "no follower the nameserver would take (alive, on a healthy tablet) \
                         reached the offset {} of the leader on {from} within {} s; nothing was \
                         moved",
                        f.offset,
                        self.timing.catch_up.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// The followers of `part` the nameserver would take as ChangeLeader's candidate: alive,
    /// not flagged leader, on a healthy tablet.
    async fn eligible_followers(
        &self,
        part: &Part,
        from: &str,
    ) -> Result<Vec<String>, OpenMldbError> {
        let healthy: Vec<String> = self
            .tablets()
            .await?
            .tablets
            .into_iter()
            .filter(|t| t.state == "kHealthy")
            .map(|t| t.endpoint)
            .collect();
        Ok(partition(&self.tables().await?, part)
            .map(|p| {
                p.partition_meta
                    .iter()
                    .filter(|m| {
                        m.endpoint != from
                            && m.is_alive
                            && !m.is_leader
                            && healthy.contains(&m.endpoint)
                    })
                    .map(|m| m.endpoint.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// ChangeLeader and the wait for its op. A nameserver with no leader for a moment
    /// (code 300 from every one) did not take the call: it is sent again within the op
    /// deadline. A new leader forgets the finished ops of the old one, so when no op shows,
    /// the partition's leader says whether it moved.
    pub(crate) async fn change_leader(
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
    /// is lifted (never over a follower at a higher term) and the move fails, to be tried
    /// again. `None` when the leadership moved.
    async fn stale_fence(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
    ) -> Result<Option<Found>, OpenMldbError> {
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
            _ => return Ok(None),
        };
        let mine = self.offset_on(from, *tid, *pid).await?;
        let eligible = self.eligible_followers(part, from).await?;
        for f in followers
            .iter()
            .filter(|f| to.is_none_or(|t| t == f.as_str()) && eligible.contains(f))
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
            let followers: Vec<String> = partition(&tables, p)
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

    /// Lifts a fence on `at`: the partition's term (the last of its term history, the
    /// table found by database and name), the followers as they were. Nothing is lifted
    /// without a term, nor over a follower at a higher term than the leader's (a
    /// SelectLeader that ran before its ChangeLeader failed): that move is finished instead,
    /// to the follower with the highest offset, and the leader stays fenced until the
    /// nameserver marks it not alive.
    pub(crate) async fn unfence(
        &self,
        part: &Part,
        at: &str,
        followers: &[String],
    ) -> Result<(), OpenMldbError> {
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
        let mut ahead = None;
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
                let best = ahead.as_ref().is_none_or(|(_, o)| t.offset > *o);
                if best {
                    ahead = Some((f.clone(), t.offset));
                }
            }
        }
        if let Some((candidate, offset)) = ahead {
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
            return self
                .change_leader(&req, (db, table, *pid), mark)
                .await
                .map_err(|e| OpenMldbError::Move {
                    table: table.clone(),
                    pid: *pid,
                    reason: format!(
                        "followers hold a newer term than the fenced leader on {at}, and the \
                         ChangeLeader to {candidate} (offset {offset}) failed: {e}; the fence \
                         stays up"
                    ),
                });
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
            Ok(_) => Ok(()),
            Err(OpenMldbError::App { code: c, .. }) if c == code::TABLE_IS_LEADER => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Holds `at` in follower mode (`SetMode`) for one more move.
    async fn hold(&self, at: &str) -> Result<(), OpenMldbError> {
        let first = {
            let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            let n = holds.entry(at.to_string()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            let _: Status = self
                .endpoint(at)
                .call(
                    "TabletServer",
                    "SetMode",
                    &serde_json::json!({"follower": true}),
                )
                .await?;
        }
        Ok(())
    }

    /// Ends one move's hold on `at`; the last one releases the tablet.
    async fn release(&self, at: &str) {
        let last = {
            let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            let n = holds.entry(at.to_string()).or_default();
            *n = n.saturating_sub(1);
            *n == 0
        };
        if !last {
            return;
        }
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

/// Partition `part` in the nameserver's tables, found by database, table and pid.
pub(crate) fn partition<'a>(
    tables: &'a [TableInfo],
    part: &Part,
) -> Option<&'a crate::api::TablePartition> {
    tables
        .iter()
        .find(|t| t.name == part.1 && t.db == part.0)
        .and_then(|t| t.table_partition.iter().find(|p| p.pid == part.3))
}
