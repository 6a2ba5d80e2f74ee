//! The write ledger: every acknowledged write has an identity (its partition and a sequence
//! number) and every replica holds the log of writes it has applied.
//!
//! Nothing counts a loss directly: a write is lost when it was acknowledged to a client and is
//! absent from the log of the replica that serves its partition at the end of the run.

use super::{Part, Rep, Replica, Us, World};

/// The writes a replica has applied, in order: sequence numbers (strictly increasing, since a
/// history only grows by the partition's next number) with the instants the leader acked
/// them, side by side in one buffer (a write touches one allocation per replica).
#[derive(Clone, Debug, Default)]
pub(crate) struct Log {
    entries: Vec<Entry>,
    /// The last entry's sequence number (0 when empty), kept beside the buffer: whether a
    /// follower holds a prefix of its leader's log is told without reading its buffer.
    tail: u32,
}

/// One applied write: its sequence number and when its leader acked it, in whole
/// milliseconds rounded up (so a follower receives it no sooner than it would exactly; eight
/// bytes a write where the log's memory is most of a large simulation's). An ack after
/// 49 days of virtual time saturates, and such a write reaches no follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    seq: u32,
    at_ms: u32,
}

impl Entry {
    fn new(seq: u32, at: Us) -> Self {
        Self {
            seq,
            at_ms: u32::try_from(at.div_ceil(1000)).unwrap_or(u32::MAX),
        }
    }

    /// Whether it was acked at or before `upto` (microseconds).
    fn acked_by(self, upto: Us) -> bool {
        u64::from(self.at_ms) * 1000 <= upto
    }
}

impl Log {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends a write the replica took as leader.
    pub(crate) fn push(&mut self, seq: u32, at: Us) {
        self.entries.push(Entry::new(seq, at));
        self.tail = seq;
    }

    /// Whether the log holds write `seq`.
    pub(crate) fn holds(&self, seq: u32) -> bool {
        self.entries.binary_search_by_key(&seq, |e| e.seq).is_ok()
    }

    /// How many leading entries `self` and `other` share. Histories only branch (a deposed
    /// leader that kept taking writes), so agreement at position k implies agreement before.
    fn common_prefix(&self, other: &Log) -> usize {
        let n = self.len().min(other.len());
        if n == 0 {
            return 0;
        }
        let last = if n == self.len() {
            self.tail == other.entries[n - 1].seq
        } else {
            other.tail == self.entries[n - 1].seq
        };
        if last {
            return n;
        }
        let same = |k: usize| self.entries[k].seq == other.entries[k].seq;
        // Largest k with self[..k] == other[..k]: agreement is monotone in k.
        let (mut lo, mut hi) = (0, n - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if same(mid - 1) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Follows `leader`: drops what diverges from it (a follower's tail the leader never had is
    /// truncated, as log reconciliation and OpenMLDB's DeleteBinlog do), then appends the
    /// leader's entries acked at or before `upto`.
    pub(crate) fn follow(&mut self, leader: &Log, upto: Us) {
        let k = self.common_prefix(leader);
        let end = k + leader.entries[k..].partition_point(|e| e.acked_by(upto));
        if k == self.len() && end == k {
            return;
        }
        self.entries.truncate(k);
        self.entries.extend_from_slice(&leader.entries[k..end]);
        self.tail = self.entries.last().map_or(0, |e| e.seq);
    }

    #[cfg(test)]
    fn seqs(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.seq).collect()
    }
}

/// How many of the writes acknowledged on a partition, `0..acked`, are absent from `log`:
/// a log holds acknowledged writes only, each once and in increasing order, so what it
/// holds below `acked` is a prefix of its entries.
pub(crate) fn missing(acked: u32, log: &Log) -> u64 {
    let held = log.entries.partition_point(|e| e.seq < acked);
    u64::from(acked).saturating_sub(held as u64)
}

impl World {
    /// Acknowledged writes absent from what each partition serves now ([`serving_replica`]).
    pub(crate) fn writes_lost(&mut self) -> u64 {
        let mut lost = 0;
        for p in 0..self.parts.len() as u32 {
            self.replicate(p);
            let part = &self.parts[p as usize];
            let serving = serving_replica(part);
            let missing = match serving {
                Some(r) => missing(part.next_seq, &r.log),
                None => u64::from(part.next_seq),
            };
            if missing > 0 {
                tracing::debug!(
                    partition = p,
                    missing,
                    replicas = ?part
                        .replicas
                        .iter()
                        .map(|r| (r.node, r.role, r.loaded, r.log.len()))
                        .collect::<Vec<_>>(),
                    "acknowledged writes the serving replica lacks"
                );
            }
            lost += missing;
        }
        lost
    }
}

/// The replica whose data a partition serves, or will serve once it recovers: its primary
/// (a down one reloads its data from disk), or, with none, the one with the longest log, which
/// recovery promotes.
pub(crate) fn serving_replica(part: &Part) -> Option<&Replica> {
    part.replicas
        .iter()
        .find(|r| r.role == Rep::Primary && r.loaded)
        .or_else(|| part.replicas.iter().find(|r| r.role == Rep::Primary))
        .or_else(|| part.replicas.iter().max_by_key(|r| r.log.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seqs: &[u32]) -> Log {
        let mut l = Log::default();
        for (i, &s) in seqs.iter().enumerate() {
            l.push(s, i as Us * 1000);
        }
        l
    }

    #[test]
    fn a_follower_gets_only_what_the_leader_acked_before_the_bound() {
        let leader = log(&[1, 2, 3, 4]);
        let mut f = log(&[1]);
        f.follow(&leader, 2000);
        assert_eq!(f.seqs(), vec![1, 2, 3]);
    }

    #[test]
    fn a_write_acked_off_the_millisecond_grid_reaches_a_synchronous_follower_at_once() {
        // PacificA replicates with no lag: `World::replicate` passes no bound then.
        let mut leader = Log::default();
        leader.push(1, 1_500);
        let mut f = Log::default();
        f.follow(&leader, Us::MAX);
        assert_eq!(f.seqs(), vec![1]);
    }

    #[test]
    fn an_ack_time_is_rounded_up_never_down() {
        let mut leader = Log::default();
        leader.push(1, 1_500);
        let mut f = Log::default();
        f.follow(&leader, 1_999);
        assert_eq!(f.len(), 0, "not before the whole millisecond");
        f.follow(&leader, 2_000);
        assert_eq!(f.seqs(), vec![1]);
    }

    #[test]
    fn a_diverged_tail_is_truncated_and_counted_missing() {
        // 3 and 5 were taken by a deposed leader; the new leader wrote 4 and 6.
        let mut old = log(&[1, 2, 3, 5]);
        let leader = log(&[1, 2, 4, 6]);
        assert_eq!(old.common_prefix(&leader), 2);
        old.follow(&leader, Us::MAX);
        assert_eq!(old.seqs(), vec![1, 2, 4, 6]);
        // Acked 1 to 6 (0 too, here absent from both): the deposed leader's 3 and 5 are lost.
        assert_eq!(missing(7, &old), 3);
    }

    #[test]
    fn missing_counts_every_absent_ack() {
        assert_eq!(missing(0, &log(&[])), 0);
        assert_eq!(missing(2, &log(&[])), 2);
        assert_eq!(missing(4, &log(&[0, 1, 2, 3])), 0);
        assert_eq!(missing(8, &log(&[0, 1, 2, 3, 6, 7])), 2);
    }
}
