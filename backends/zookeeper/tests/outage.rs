//! `ZkJournal` while its ZooKeeper goes away: a private standalone server (Debian's, started
//! by `scripts/zookeeper.sh` in a directory and on a port of this test's own, so that no
//! other test sees the outage) is restarted, then frozen past the session timeout.

#![allow(
    clippy::disallowed_methods,
    reason = "a real server's outage passes in wall time, which no paused clock drives"
)]

use std::time::Duration;

use rollout_core::{
    Journal, NodeId,
    journal::{Entry, JournalError},
};
use rollout_zookeeper::testing::PrivateZooKeeper;
use rollout_zookeeper::{ZkJournal, ZkOptions};

fn done(n: &str) -> Entry {
    Entry::NodeDone {
        node: NodeId::new(n),
    }
}

fn journal(hosts: &str, session: Duration) -> ZkJournal {
    let mut o = ZkOptions::new(hosts, "/");
    o.session_timeout = session;
    ZkJournal::connect(o).unwrap()
}

#[test]
fn appends_and_lock_checks_wait_through_a_server_restart_none_lost_or_doubled() {
    let zk = PrivateZooKeeper::start("restart");
    let j = journal(zk.hosts(), Duration::from_secs(30));
    j.lock("rollout A").unwrap();
    j.append(&done("a:1")).unwrap();
    // Appends and lock checks go on while the server is down and coming back.
    let mut n = 1;
    let back = std::thread::scope(|s| {
        let restart = s.spawn(|| zk.restart());
        while !restart.is_finished() {
            j.fence().unwrap();
            j.append(&done(&format!("n{n}:1"))).unwrap();
            n += 1;
            // Pacing, not a wait for anything: a few hundred appends over the restart, not
            // tens of thousands.
            std::thread::sleep(Duration::from_millis(20));
        }
        restart.join().unwrap()
    });
    assert_eq!(back.unwrap(), zk.hosts(), "the server came back elsewhere");
    j.append(&done("z:1")).unwrap();
    j.fence().unwrap();
    let entries = j.load().unwrap();
    let mut expected = vec![done("a:1")];
    expected.extend((1..n).map(|i| done(&format!("n{i}:1"))));
    expected.push(done("z:1"));
    assert_eq!(entries, expected, "an append was lost or recorded twice");
    // The session, and so the lock, survived the restart.
    assert_eq!(j.holder().unwrap().unwrap().rollout, "rollout A");
}

#[test]
fn a_server_gone_past_the_session_timeout_fails_the_next_step_and_frees_the_lock() {
    let zk = PrivateZooKeeper::start("outage");
    let session = Duration::from_secs(4);
    let a = journal(zk.hosts(), session);
    a.lock("rollout A").unwrap();
    a.append(&done("a:1")).unwrap();
    zk.signal("-STOP");
    let e = a.append(&done("b:1")).unwrap_err();
    assert!(
        matches!(
            e,
            JournalError::Store { .. } | JournalError::LockLost { .. }
        ),
        "{e}"
    );
    assert!(a.fence().is_err(), "A may still act without ZooKeeper");
    zk.signal("-CONT");
    // Back again, the server expires A's session: its lock goes, with no manual cleanup,
    // and another orchestrator takes it over and finds what A had recorded.
    let b = journal(zk.hosts(), session);
    let mut took = false;
    for _ in 0..40 {
        if b.lock("rollout B").is_ok() {
            took = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250)); // a bounded poll: 40 tries
    }
    assert!(took, "A's lock did not go with its session");
    // The append A sent into the frozen server may still have been committed when it woke,
    // before A's session expired (ZooKeeper processes what it had received): an entry
    // recorded whose action was never taken, which a resume tolerates by design. What
    // may not happen: anything of A's after B holds the lock.
    let seen = b.load().unwrap();
    assert!(
        seen == vec![done("a:1")] || seen == vec![done("a:1"), done("b:1")],
        "{seen:?}"
    );
    let e = a.append(&done("c:1")).unwrap_err();
    assert!(matches!(e, JournalError::LockLost { .. }), "{e}");
    assert!(a.fence().is_err());
    assert_eq!(b.load().unwrap(), seen, "A's late append landed");
}
