//! `ZkJournal` against a real ZooKeeper (`ROLLOUT_ZK`, set by `.ci/run`, else one started by
//! `scripts/zookeeper.sh`; a ZooKeeper that cannot be had fails the test, never skips it).

use std::time::Duration;

use rollout_core::{
    Journal, NodeId,
    journal::{Entry, JournalError},
};
use rollout_zookeeper::testing::zookeeper;
use rollout_zookeeper::{ZkJournal, ZkOptions};
use zookeeper_client as zk;

/// A fresh cluster root (`/journal-test-<name>-<pid>`), made with a raw client.
fn root(hosts: &str, name: &str) -> String {
    let root = format!("/journal-test-{name}-{}", std::process::id());
    let hosts = hosts.to_string();
    let path = root.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let c = zk::Client::connect(&hosts).await.unwrap();
            let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match c.create(&path, b"", &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => panic!("{e}"),
            }
        });
    root
}

/// Runs `f` with a raw client of `hosts` on a runtime of its own.
fn raw<T>(hosts: &str, f: impl AsyncFnOnce(&zk::Client) -> T) -> T {
    let hosts = hosts.to_string();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let c = zk::Client::connect(&hosts).await.unwrap();
            f(&c).await
        })
}

fn done(n: &str) -> Entry {
    Entry::NodeDone {
        node: NodeId::new(n),
    }
}

#[test]
fn entries_round_trip_in_order_and_survive_the_orchestrator() {
    let hosts = zookeeper();
    let root = root(&hosts, "roundtrip");
    let j = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    j.lock("rollout one").unwrap();
    for n in ["a:1", "b:1", "c:1"] {
        j.append(&done(n)).unwrap();
    }
    j.unlock();
    drop(j);
    // Another orchestrator (another session) reads them back.
    let k = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    assert_eq!(
        k.load().unwrap(),
        vec![done("a:1"), done("b:1"), done("c:1")]
    );
}

#[test]
fn a_second_orchestrator_is_refused_naming_the_holder() {
    let hosts = zookeeper();
    let root = root(&hosts, "race");
    let a = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    let b = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    a.lock("rollout A").unwrap();
    let e = b.lock("rollout B").unwrap_err();
    assert!(matches!(e, JournalError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("rollout A"), "{e}");
    assert_eq!(b.holder().unwrap().unwrap().rollout, "rollout A");
    // Once A lets go, B may.
    a.unlock();
    b.lock("rollout B").unwrap();
}

#[test]
fn an_orchestrator_whose_lock_is_gone_records_nothing_more() {
    let hosts = zookeeper();
    let root = root(&hosts, "fence");
    let a = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    a.lock("rollout A").unwrap();
    a.append(&done("a:1")).unwrap();
    // A's session is as good as expired: its lock node goes (as ZooKeeper deletes it when
    // the session expires), and B takes the lock.
    let dir = format!("{root}/rollout");
    raw(&hosts, async |c| {
        for name in c.list_children(&dir).await.unwrap() {
            if name.starts_with("lock-") {
                c.delete(&format!("{dir}/{name}"), None).await.unwrap();
            }
        }
    });
    let b = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    b.lock("rollout B").unwrap();
    // The check the engine makes before each action fails too, naming the new holder.
    let e = a.fence().unwrap_err();
    assert!(matches!(e, JournalError::LockLost { .. }), "{e}");
    assert!(e.to_string().contains("rollout B"), "{e}");
    b.fence().unwrap();
    let e = a.append(&done("b:1")).unwrap_err();
    assert!(matches!(e, JournalError::LockLost { .. }), "{e}");
    assert!(e.to_string().contains("rollout B"), "{e}");
    assert_eq!(
        b.load().unwrap(),
        vec![done("a:1")],
        "A's late append landed"
    );
}

#[test]
fn a_root_keeping_another_clusters_rollouts_is_refused() {
    let hosts = zookeeper();
    let root = root(&hosts, "cluster");
    let a = ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("openmldb/a")).unwrap();
    a.lock("rollout").unwrap();
    a.append(&done("a:1")).unwrap();
    a.unlock();
    // The same cluster again, and a reader that names none, are fine.
    ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("openmldb/a")).unwrap();
    ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    let e = ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("openmldb/b"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"openmldb/a\"")
            && e.contains("another cluster")
            && e.contains("nothing was changed"),
        "{e}"
    );
}

#[test]
fn an_append_lands_once_after_the_summary_was_rewritten_by_hand() {
    // Two appends of the same entry are two records; the summary follows the last one.
    // (An append retried after a lost connection is in tests/outage.rs.)
    let hosts = zookeeper();
    let root = root(&hosts, "summary");
    let j = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    j.lock("rollout").unwrap();
    j.append(&done("a:1")).unwrap();
    j.append(&done("a:1")).unwrap();
    // Someone (an operator by hand) rewrites the summary: the next append still lands once.
    let summary = format!("{root}/rollout/summary");
    raw(&hosts, async |c| {
        c.set_data(&summary, b"{}", None).await.unwrap();
    });
    j.append(&done("b:1")).unwrap();
    assert_eq!(
        j.load().unwrap(),
        vec![done("a:1"), done("a:1"), done("b:1")]
    );
    let text = raw(&hosts, async |c| c.get_data(&summary).await.unwrap().0);
    assert_eq!(serde_json::from_slice::<Entry>(&text).unwrap(), done("b:1"));
}

#[test]
fn a_read_only_journal_creates_nothing_and_reads_what_is_there() {
    let hosts = zookeeper();
    let root = root(&hosts, "readonly");
    let mut o = ZkOptions::new(&hosts, &root).cluster("openmldb/a");
    o.read_only = true;
    let r = ZkJournal::connect(o.clone()).unwrap();
    assert_eq!(r.load().unwrap(), vec![]);
    assert_eq!(r.holder().unwrap(), None);
    let made = raw(&hosts, async |c| {
        c.check_stat(&format!("{root}/rollout")).await.unwrap()
    });
    assert!(made.is_none(), "a read-only journal made {root}/rollout");
    let w = ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("openmldb/a")).unwrap();
    w.lock("rollout A").unwrap();
    w.append(&done("a:1")).unwrap();
    let r = ZkJournal::connect(o).unwrap();
    assert_eq!(r.load().unwrap(), vec![done("a:1")]);
    assert_eq!(r.holder().unwrap().unwrap().rollout, "rollout A");
}

#[test]
fn a_root_made_before_it_was_named_takes_the_first_name() {
    let hosts = zookeeper();
    let root = root(&hosts, "unnamed");
    ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("openmldb/a")).unwrap();
    let e = ZkJournal::connect(ZkOptions::new(&hosts, &root).cluster("pegasus/b"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another cluster"), "{e}");
}

#[test]
fn with_digest_credentials_the_journal_is_readable_by_that_user_alone() {
    let hosts = zookeeper();
    let root = root(&hosts, "digest");
    let with = |digest: Option<&str>| {
        let mut o = ZkOptions::new(&hosts, &root);
        o.digest = digest.map(str::to_string);
        o.connect_timeout = Duration::from_secs(5);
        ZkJournal::connect(o)
    };
    let a = with(Some("rollout:s3cret")).unwrap();
    a.lock("rollout A").unwrap();
    a.append(&done("a:1")).unwrap();
    // The same user, another session: reads it back.
    assert_eq!(
        with(Some("rollout:s3cret")).unwrap().load().unwrap(),
        vec![done("a:1")]
    );
    // Anyone else is refused, with the znode named.
    let entries = format!("{root}/rollout/entries");
    let denied = raw(&hosts, async |c| {
        let names = c.list_children(&entries).await;
        matches!(names, Err(zk::Error::NoAuth))
    });
    assert!(denied, "{entries} is readable without the credentials");
    let e = with(None).and_then(|j| j.load()).unwrap_err().to_string();
    assert!(e.contains("rollout"), "{e}");
    let e = with(Some("other:wrong"))
        .and_then(|j| j.load())
        .unwrap_err();
    assert!(e.to_string().contains("rollout"), "{e}");
}

#[test]
fn a_corrupt_entry_is_an_error_naming_its_znode() {
    let hosts = zookeeper();
    let root = root(&hosts, "corrupt");
    let j = ZkJournal::connect(ZkOptions::new(&hosts, &root)).unwrap();
    j.lock("rollout").unwrap();
    j.append(&done("a:1")).unwrap();
    let entries = format!("{root}/rollout/entries");
    raw(&hosts, async |c| {
        let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        c.create(&format!("{entries}/e-"), b"not json", &opts)
            .await
            .unwrap();
    });
    let e = j.load().unwrap_err().to_string();
    assert!(
        e.contains(&entries) && e.contains("not a rollout journal entry"),
        "{e}"
    );
}

#[test]
fn an_unreachable_zookeeper_or_a_missing_root_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut o = ZkOptions::new(format!("127.0.0.1:{port}"), "/openmldb");
    o.connect_timeout = Duration::from_secs(2);
    let e = ZkJournal::connect(o).unwrap_err().to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("nothing was changed"),
        "{e}"
    );
    let hosts = zookeeper();
    let e = ZkJournal::connect(ZkOptions::new(&hosts, "/no-such-cluster-root"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no-such-cluster-root does not exist"), "{e}");
}
