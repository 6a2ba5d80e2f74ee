//! The zero-loss leader move (docs/openmldb-fences.md): wait
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
    Status, TableInfo, TidPid, code,
};
use crate::cluster::{NodeFactory, OpenMldbCluster, Part};
use crate::error::OpenMldbError;

/// Polls without a follower at the leader's offset before the tablet is held.
const POLLS_UNHELD: u32 = 5;

/// Fences lifted (a write slipped in) before a move gives up.
const MOVE_TRIES: u32 = 5;

/// A follower found at the leader's offset: it, every follower, and whether the leader was
/// found fenced already (a move interrupted after its fence).
pub(crate) type Found = (String, Vec<String>, bool);

/// What the wait for a follower at the leader's offset found.
pub(crate) enum Follow {
    /// One: the move goes on from there.
    At(Found),
    /// The leadership is elsewhere: someone else moved it.
    Gone,
    /// An earlier attempt's fence was found over followers at a newer term, and the move was
    /// finished to one of them: done, its old leader to be recovered.
    Moved,
}

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
        // Fence first, then let the rest of the tablet write again, whatever was found.
        let fenced = match &found {
            Ok(Follow::At(f)) if !f.2 => Some(self.fence(from, part.2, *pid).await),
            _ => None,
        };
        if held {
            self.release(from).await;
        }
        let found = match found? {
            Follow::At(f) => f,
            Follow::Gone => return Ok(false),
            Follow::Moved => return Ok(true),
        };
        if let Some(r) = fenced {
            r?;
        }
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
            if self.unfence(part, from, &followers).await? {
                return Ok(true);
            }
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
            if refused_before_any_op(&e) {
                // Nothing ran (no term moved): the fence comes down.
                let moved = self.unfence(part, from, &followers).await?;
                if moved {
                    return Ok(true);
                }
                return Err(OpenMldbError::Move {
                    table: table.clone(),
                    pid: *pid,
                    reason: format!(
                        "the nameserver refused the ChangeLeader to {candidate} ({e}); the \
                         fence on {from} was lifted and nothing moved"
                    ),
                });
            }
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
    /// `POLLS_UNHELD`th poll on; [`Follow::Gone`] when `from` no longer leads the
    /// partition.
    async fn await_follower(
        &self,
        part: &Part,
        from: &str,
        to: Option<&str>,
        hold_now: bool,
        held: &mut bool,
    ) -> Result<Follow, OpenMldbError> {
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
            let mut blocker = None;
            let candidate = if at_offset.is_empty() {
                None
            } else {
                let (eligible, not_ready) = self.eligible_followers(part, from).await?;
                blocker = not_ready;
                at_offset
                    .into_iter()
                    .find(|x| eligible.iter().any(|e| e == x))
                    .filter(|_| blocker.is_none())
                    .map(str::to_string)
            };
            if let Some(c) = candidate {
                let followers = f.follower_info.iter().map(|x| x.endpoint.clone()).collect();
                return Ok(Follow::At((c, followers, false)));
            }
            polls += 1;
            if tokio::time::Instant::now() >= deadline {
                let why = blocker.unwrap_or_else(|| {
                    format!(
                        "no follower the nameserver would take (alive, on a healthy tablet) \
                         reached the offset {} of the leader on {from}",
                        f.offset
                    )
                });
                return Err(OpenMldbError::Move {
                    table: table.clone(),
                    pid: *pid,
                    reason: format!(
                        "{why} within {} s; nothing was fenced or moved",
                        self.timing.catch_up.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// The followers of `part` the nameserver would take as ChangeLeader's candidate (alive,
    /// not flagged leader, on a healthy tablet), and what would fail the ChangeLeader all
    /// the same: SelectLeader asks every one of them (`FollowOfNoOne`) and fails on the first
    /// that has not loaded the partition as a follower, after those before it took the new
    /// term (`NameServerImpl::SelectLeader`, `TabletImpl::AppendEntries` @v0.9.2).
    pub(crate) async fn eligible_followers(
        &self,
        part: &Part,
        from: &str,
    ) -> Result<(Vec<String>, Option<String>), OpenMldbError> {
        let healthy: Vec<String> = self
            .tablets()
            .await?
            .tablets
            .into_iter()
            .filter(|t| t.state == "kHealthy")
            .map(|t| t.endpoint)
            .collect();
        let eligible: Vec<String> = partition(&self.tables().await?, part)
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
            .unwrap_or_default();
        for e in &eligible {
            let r: Result<GetTableStatusResponse, _> = self
                .endpoint(e)
                .call(
                    "TabletServer",
                    "GetTableStatus",
                    &TidPid {
                        tid: part.2,
                        pid: part.3,
                    },
                )
                .await;
            let ready = r.as_ref().is_ok_and(|r| {
                r.all_table_status.iter().any(|s| {
                    s.tid == part.2
                        && s.pid == part.3
                        && s.is_loaded()
                        && s.mode == "kTableFollower"
                })
            });
            if !ready {
                let why = match r {
                    Err(e) => format!("does not answer ({e})"),
                    Ok(_) => "has not loaded it as a follower".to_string(),
                };
                return Ok((
                    eligible.clone(),
                    Some(format!(
                        "the follower of {}.{} partition {} on {e} {why}, so the nameserver's \
                         ChangeLeader would fail after raising the other followers' term",
                        part.0, part.1, part.3
                    )),
                ));
            }
        }
        Ok((eligible, None))
    }

    /// ChangeLeader and the wait for its op. A nameserver with no leader for longer than
    /// `ns` waits, or a leader that did not answer in time (it may have taken the call), has
    /// it sent again within the op deadline (a refusal of the second, when the first ran,
    /// is judged as below). A new leader forgets the finished ops of the old one, so when no
    /// op shows, the partition's leader says whether it moved.
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

/// Whether a ChangeLeader's error is the nameserver's refusal of the call itself (100, 301,
/// 305, 309, 310, ...: no op was created, no term moved), not the failure of its op.
fn refused_before_any_op(e: &OpenMldbError) -> bool {
    matches!(e, OpenMldbError::App { method: "ChangeLeader", code: c, .. }
        if *c > 0 && *c != code::NAMESERVER_IS_NOT_LEADER)
}
