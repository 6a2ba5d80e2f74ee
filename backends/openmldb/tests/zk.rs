//! Discovery against a real ZooKeeper (Debian's package, started by `scripts/zookeeper.sh`),
//! with the nodes laid out as OpenMLDB writes them (docs/openmldb-interfaces.md).
//! `ROLLOUT_ZK` names the server; without it the test starts one with the script, and under
//! CI a missing ZooKeeper fails the test rather than skipping it.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use rollout_openmldb::OpenMldbError;
use rollout_openmldb::zk::{TabletNode, Zk};
use support::zookeeper;
use zookeeper_client as zk;

async fn put(c: &zk::Client, path: &str, data: &str, mode: zk::CreateMode) {
    let opts = mode.with_acls(zk::Acls::anyone_all());
    let mut at = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(p);
        let last = i + 1 == parts.len();
        let (d, o) = if last {
            (data.as_bytes(), &opts)
        } else {
            (
                &b""[..],
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            )
        };
        match c.create(&at, d, o).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => panic!("create {at}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reads_the_layout_openmldb_writes() {
    let ensemble = zookeeper();
    let root = format!("/rollout-test-{}", std::process::id());
    let c = zk::Client::connect(&ensemble).await.expect("connect");
    // Two nameservers, the second registered first; a tablet restarted, one re-registered.
    put(
        &c,
        &format!("{root}/leader/lock_request0000000002"),
        "10.0.0.2:7527",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/leader/lock_request0000000001"),
        "ns-a",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/map/names/ns-a"),
        "10.0.0.1:7527",
        zk::CreateMode::Persistent,
    )
    .await;
    put(
        &c,
        &format!("{root}/nodes/10.0.0.5:10921"),
        "startup_10.0.0.5:10921",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/nodes/10.0.0.6:10921"),
        "10.0.0.6:10921",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/config/auto_failover"),
        "true",
        zk::CreateMode::Persistent,
    )
    .await;
    put(
        &c,
        &format!("{root}/taskmanager/leader"),
        "10.0.0.9:9902",
        zk::CreateMode::Ephemeral,
    )
    .await;

    let z = Zk::connect(&ensemble, &root, Duration::from_secs(10), None)
        .await
        .unwrap();
    assert_eq!(
        z.nameservers().await.unwrap(),
        ["10.0.0.1:7527", "10.0.0.2:7527"]
    );
    assert_eq!(z.leader().await.unwrap(), "10.0.0.1:7527");
    assert_eq!(
        z.tablets().await.unwrap(),
        [
            TabletNode {
                endpoint: "10.0.0.5:10921".into(),
                fresh_start: true
            },
            TabletNode {
                endpoint: "10.0.0.6:10921".into(),
                fresh_start: false
            },
        ]
    );
    assert_eq!(z.auto_failover().await.unwrap(), Some(true));
    assert_eq!(
        z.taskmanager().await.unwrap().as_deref(),
        Some("10.0.0.9:9902")
    );

    // A change wakes the watch: the leader's lock node goes (its session ended).
    let wake = {
        let z = z.clone();
        tokio::spawn(async move { z.changed().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.delete(&format!("{root}/leader/lock_request0000000001"), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), wake)
        .await
        .expect("the watch fired")
        .unwrap()
        .unwrap();
    assert_eq!(z.leader().await.unwrap(), "10.0.0.2:7527");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_without_openmldb_and_a_dead_ensemble_are_refused_by_name() {
    let ensemble = zookeeper();
    let err = Zk::connect(
        &ensemble,
        "/no-openmldb-here",
        Duration::from_secs(10),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpenMldbError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/no-openmldb-here"), "{err}");

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let err = Zk::connect(&dead, "/openmldb", Duration::from_secs(3), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OpenMldbError::ZooKeeper { .. }), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");
}

/// A nameserver on loopback answering each request by `answer(path, n)`, `n` counting the
/// requests to that path from 0 (`None`: it takes the call and never answers); after `max`
/// connections its port closes, as a stopped process's does. Returns its address.
async fn nameserver(
    max: usize,
    answer: impl Fn(&str, usize) -> Option<(u16, String)> + Send + Sync + 'static,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    tokio::spawn(async move {
        for _ in 0..max {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (answer, seen) = (answer.clone(), seen.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as it announces.
                let (head, want) = loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        break (text[..end].to_string(), end + 4 + len);
                    }
                };
                while got.len() < want {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let c = seen.entry(path.clone()).or_default();
                    *c += 1;
                    *c - 1
                };
                let Some((status, body)) = answer(&path, n) else {
                    // Taken, never answered: the caller's deadline ends it.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// "Not leader" (code 300), as a standby nameserver answers.
fn not_leader() -> Option<(u16, String)> {
    Some((
        200,
        r#"{"code":300,"msg":"nameserver is not leader"}"#.into(),
    ))
}

/// What a nameserver leader of an empty 0.9.1 cluster answers.
fn leads(path: &str) -> Option<(u16, String)> {
    let body = match path {
        "/version" => "0.9.1",
        "/NameServer/ShowTablet" => r#"{"code":0,"msg":"ok","tablets":[]}"#,
        "/NameServer/ShowTable" => r#"{"code":0,"msg":"ok","table_info":[]}"#,
        _ => r#"{"code":0,"msg":"ok","op_status":[]}"#,
    };
    Some((200, body.into()))
}

/// Two nameservers registered under a fresh root, `a` first in election order, by a
/// session the caller keeps (their nodes are ephemeral, as a nameserver's are: a re-run
/// finds none left).
async fn register(tag: &str, a: &str, b: &str) -> (String, String, zk::Client) {
    let ensemble = zookeeper();
    let root = format!("/rollout-test-{tag}-{}", std::process::id());
    let c = zk::Client::connect(&ensemble).await.expect("connect");
    for (seq, addr) in [(1, a), (2, b)] {
        put(
            &c,
            &format!("{root}/leader/lock_request000000000{seq}"),
            addr,
            zk::CreateMode::Ephemeral,
        )
        .await;
    }
    (ensemble, root, c)
}

/// The backend connected to `root` with `timing`, its nodes never touched.
async fn connected(
    ensemble: &str,
    root: &str,
    timing: rollout_openmldb::Timing,
) -> rollout_openmldb::OpenMldbCluster<
    impl rollout_openmldb::NodeFactory<Node = rollout_core::erased::BoxNode>,
> {
    let config = rollout_openmldb::Config::new(ensemble, root).timing(timing);
    rollout_openmldb::OpenMldbCluster::connect(&config, |_: &rollout_core::NodeId| {
        None::<rollout_core::erased::BoxNode>
    })
    .await
    .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// How a scripted nameserver answers a path, the `n`th time.
type Answer = Box<dyn Fn(&str, usize) -> Option<(u16, String)> + Send + Sync>;

/// A leader that loses its lock when `lost` is set (it answers 300 from then on), and a
/// standby that answers 300 until then and for its first `leads_after` calls after (all of
/// them with `None`), counted in `asked`, then leads.
struct Failover {
    lost: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    old: Answer,
    new: Answer,
}

fn failover(leads_after: Option<usize>) -> Failover {
    let lost = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let old: Answer = {
        let lost = lost.clone();
        Box::new(move |path, _| {
            if lost.load(SeqCst) && path != "/version" {
                not_leader()
            } else {
                leads(path)
            }
        })
    };
    let new: Answer = {
        let (lost, asked) = (lost.clone(), asked.clone());
        Box::new(move |path, _| {
            if path == "/version" {
                return leads(path);
            }
            if !lost.load(SeqCst) {
                return not_leader();
            }
            let n = asked.fetch_add(1, SeqCst);
            if leads_after.is_some_and(|k| n >= k) {
                leads(path)
            } else {
                not_leader()
            }
        })
    };
    Failover {
        lost,
        asked,
        old,
        new,
    }
}

/// Not only connecting: any nameserver call that meets no leader (the leader lost its lock,
/// the standby not elected yet) asks again until one leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nameserver_call_waits_out_an_election() {
    let f = failover(Some(4));
    let (a, b) = (
        nameserver(usize::MAX, f.old).await,
        nameserver(usize::MAX, f.new).await,
    );
    let (ensemble, root, _session) = register("election", &a, &b).await;
    let cluster = connected(
        &ensemble,
        &root,
        rollout_openmldb::Timing::default().scaled(20),
    )
    .await;
    f.lost.store(true, SeqCst);
    let rows = cluster
        .row_counts()
        .await
        .unwrap_or_else(|e| panic!("ShowTable met no leader and gave up: {e}"));
    assert!(rows.is_empty());
    assert!(
        f.asked.load(SeqCst) > 4,
        "the standby was not asked until it led"
    );
}

/// A wait for an election is bounded: with no leader ever, the call fails with the standby's
/// answer after three of the backend's ZooKeeper sessions (6 s here), having asked more than
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameserver_call_gives_up_when_no_leader_is_elected() {
    let f = failover(None);
    let (a, b) = (
        nameserver(usize::MAX, f.old).await,
        nameserver(usize::MAX, f.new).await,
    );
    let (ensemble, root, _session) = register("noelection", &a, &b).await;
    let mut timing = rollout_openmldb::Timing::default().scaled(20);
    timing.session = Duration::from_secs(2);
    let cluster = connected(&ensemble, &root, timing).await;
    f.lost.store(true, SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(60), cluster.row_counts())
        .await
        .expect("the wait for a leader is unbounded")
        .unwrap_err();
    assert!(
        matches!(err, OpenMldbError::App { code: 300, .. }),
        "not the standby's answer: {err}"
    );
    assert!(f.asked.load(SeqCst) > 1, "it gave up without asking again");
}

/// A call the leader may have taken (it took the request and did not answer in time) is not
/// sent to another nameserver by the same call: the engine decides what to do next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_leader_may_have_taken_is_not_sent_again() {
    let hang = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let old = {
        let hang = hang.clone();
        move |path: &str, _| {
            if hang.load(SeqCst) && path == "/NameServer/ShowTable" {
                None
            } else {
                leads(path)
            }
        }
    };
    let standby = {
        let asked = asked.clone();
        move |path: &str, _| {
            if path == "/NameServer/ShowTable" {
                asked.fetch_add(1, SeqCst);
            }
            if path == "/version" {
                leads(path)
            } else {
                not_leader()
            }
        }
    };
    let (a, b) = (
        nameserver(usize::MAX, old).await,
        nameserver(usize::MAX, standby).await,
    );
    let (ensemble, root, _session) = register("taken", &a, &b).await;
    let cluster = connected(
        &ensemble,
        &root,
        rollout_openmldb::Timing::default().scaled(20),
    )
    .await;
    hang.store(true, SeqCst);
    let err = cluster.row_counts().await.unwrap_err();
    assert!(matches!(err, OpenMldbError::Transport { .. }), "{err}");
    assert_eq!(asked.load(SeqCst), 0, "the call went to the standby too");
}

/// The whole kind of a leader lost while the backend reads the cluster: the leader answers
/// one call and stops, and the standby answers "not leader" (300) for a while before it wins
/// the election. Connecting (as a resumed orchestrator does) waits it out instead of failing
/// on the first read that meets no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameserver_leader_lost_between_two_reads_is_waited_out() {
    // The leader answers the first read (ShowOPStatus) and is gone before the next.
    let old = nameserver(1, |path, _| leads(path)).await;
    // The standby: not leader for its first 5 answers of each call, then the leader.
    let new = nameserver(usize::MAX, move |path, n| {
        if n < 5 && path != "/version" {
            not_leader()
        } else {
            leads(path)
        }
    })
    .await;
    let (ensemble, root, _session) = register("noleader", &old, &new).await;
    let cluster = connected(
        &ensemble,
        &root,
        rollout_openmldb::Timing::default().scaled(20),
    )
    .await;
    assert_eq!(
        cluster.server_version().map(|v| v.to_string()).as_deref(),
        Some("0.9.1")
    );
}

/// A leader that takes one of `connect`'s reads and never answers it (its process hangs, then
/// is gone) while the standby takes over: the read is not sent elsewhere, and `connect`
/// starts its reads again on the new leader instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reads_again_after_a_leader_hangs_in_the_middle_of_one() {
    let hung = Arc::new(AtomicBool::new(false));
    // ShowOPStatus answered, ShowTablet taken and never answered; then its port closes.
    let old = {
        let hung = hung.clone();
        nameserver(2, move |path, _| {
            if path == "/NameServer/ShowTablet" {
                hung.store(true, SeqCst);
                None
            } else {
                leads(path)
            }
        })
        .await
    };
    let new = {
        let hung = hung.clone();
        nameserver(usize::MAX, move |path, _| {
            if hung.load(SeqCst) || path == "/version" {
                leads(path)
            } else {
                not_leader()
            }
        })
        .await
    };
    let (ensemble, root, _session) = register("hang", &old, &new).await;
    let cluster = connected(
        &ensemble,
        &root,
        rollout_openmldb::Timing::default().scaled(20),
    )
    .await;
    assert!(hung.load(SeqCst), "the old leader never took the read");
    assert_eq!(
        cluster.server_version().map(|v| v.to_string()).as_deref(),
        Some("0.9.1")
    );
}
