//! The write ledger: every acknowledged write has an identity (its partition and a sequence
//! number) and every replica holds the log of writes it has applied.
//!
//! Nothing counts a loss directly: a write is lost when it was acknowledged to a client and is
//! absent from the log of the replica that serves its partition at the end of the run.

use super::Us;

/// The writes a replica has applied, in order: sequence numbers (strictly increasing, since a
/// history only grows by the partition's next number) and the instants the leader acked them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log {
    seqs: Vec<u32>,
    times: Vec<Us>,
}

impl Log {
    pub(crate) fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Appends a write the replica took as leader.
    pub(crate) fn push(&mut self, seq: u32, at: Us) {
        self.seqs.push(seq);
        self.times.push(at);
    }

    /// Whether the log holds write `seq`.
    pub(crate) fn holds(&self, seq: u32) -> bool {
        self.seqs.binary_search(&seq).is_ok()
    }

    /// How many leading entries `self` and `other` share. Histories only branch (a deposed
    /// leader that kept taking writes), so agreement at position k implies agreement before.
    fn common_prefix(&self, other: &Log) -> usize {
        let n = self.len().min(other.len());
        if n == 0 || self.seqs[n - 1] == other.seqs[n - 1] {
            return n;
        }
        // Largest k with self[..k] == other[..k]: agreement is monotone in k.
        let (mut lo, mut hi) = (0, n - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.seqs[mid - 1] == other.seqs[mid - 1] {
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
        self.seqs.truncate(k);
        self.times.truncate(k);
        let end = k + leader.times[k..].partition_point(|&t| t <= upto);
        self.seqs.extend_from_slice(&leader.seqs[k..end]);
        self.times.extend_from_slice(&leader.times[k..end]);
    }
}

/// How many of `acked` (strictly increasing) are absent from `log`.
pub(crate) fn missing(acked: &[u32], log: &Log) -> u64 {
    let (mut i, mut j, mut lost) = (0, 0, 0u64);
    while i < acked.len() {
        if j >= log.seqs.len() || log.seqs[j] > acked[i] {
            lost += 1;
            i += 1;
        } else if log.seqs[j] < acked[i] {
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seqs: &[u32]) -> Log {
        let mut l = Log::default();
        for (i, &s) in seqs.iter().enumerate() {
            l.push(s, i as Us);
        }
        l
    }

    #[test]
    fn a_follower_gets_only_what_the_leader_acked_before_the_bound() {
        let leader = log(&[1, 2, 3, 4]);
        let mut f = log(&[1]);
        f.follow(&leader, 2);
        assert_eq!(f.seqs, vec![1, 2, 3]);
    }

    #[test]
    fn a_diverged_tail_is_truncated_and_counted_missing() {
        // 3 and 5 were taken by a deposed leader; the new leader wrote 4 and 6.
        let mut old = log(&[1, 2, 3, 5]);
        let leader = log(&[1, 2, 4, 6]);
        assert_eq!(old.common_prefix(&leader), 2);
        old.follow(&leader, Us::MAX);
        assert_eq!(old.seqs, vec![1, 2, 4, 6]);
        assert_eq!(missing(&[1, 2, 3, 4, 5, 6], &old), 2);
    }

    #[test]
    fn missing_counts_every_absent_ack() {
        assert_eq!(missing(&[], &log(&[1])), 0);
        assert_eq!(missing(&[1, 2], &log(&[])), 2);
        assert_eq!(missing(&[2, 4, 6], &log(&[1, 2, 3, 6, 7])), 1);
    }
}
