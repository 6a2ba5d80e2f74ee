//! The node agent with real processes on loopback: the agent serves in this test process on
//! a loopback port, drives the test server through a copy of the `start.sh` fixture, and is
//! called through `AgentNode` as an orchestrator would.

use std::time::Duration;

use rollout_core::{Change, ConfigEdit, Node, NodeId};
use rollout_process::agent::{AgentEndpoint, AgentNode, proto};
use rollout_process::shell_quote;
use tokio::time::Instant;

mod support;
use support::{SERVER, free_port, lay_out, spawn_agent};
const TOKEN: &str = "a-token-of-thirty-two-characters";

/// A deploy dir, an agent serving its `tablet` component, and the endpoints.
struct Setup {
    dir: tempfile::TempDir,
    endpoint: String,
    agent: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Setup {
    /// `server_args` for the test server; `config_files` listed for the component.
    async fn new(server_args: &str, config_files: &[&str]) -> Self {
        Self::starting_after(server_args, config_files, "").await
    }

    /// As [`Setup::new`], the start command first running `before` (such as `sleep 2;`).
    async fn starting_after(server_args: &str, config_files: &[&str], before: &str) -> Self {
        Self::build(server_args, config_files, before, "").await
    }

    /// The general case: `top` is more of the agent's config (such as its `tls` line).
    async fn build(server_args: &str, config_files: &[&str], before: &str, top: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let endpoint = format!("127.0.0.1:{}", free_port());
        lay_out(root, "tablet", &endpoint);
        std::fs::write(root.join("token"), format!("{TOKEN}\n")).unwrap();
        let env = format!(
            "ROLLOUT_TEST_SERVER={} SERVER_ARGS={}",
            shell_quote(SERVER),
            shell_quote(server_args)
        );
        let files: Vec<String> = config_files.iter().map(|f| format!("{f:?}")).collect();
        let toml = format!(
            r#"
listen = "127.0.0.1:1"
token_file = {token:?}
{top}
[components.tablet]
id = "{endpoint}"
runner = {{ kind = "local" }}
deploy_dir = {dir:?}
start = {start:?}
stop = "bash bin/start.sh stop tablet"
pid_file = "bin/tablet.pid"
listen = "{endpoint}"
health_url = "http://{endpoint}/status"
version_url = "http://{endpoint}/version"
config_files = [{files}]
start_timeout_secs = 20
stop_timeout_secs = 5
"#,
            token = root.join("token").display().to_string(),
            dir = root.display().to_string(),
            start = format!("{before} {env} bash bin/start.sh start tablet"),
            files = files.join(", "),
        );
        let (agent, stop) = spawn_agent(&toml).await;
        Self {
            dir,
            endpoint,
            agent,
            stop: Some(stop),
        }
    }

    fn node(&self, token: &str, component: &str) -> AgentNode {
        let ep = AgentEndpoint {
            url: self.agent.clone(),
            token: token.to_string(),
            ca_cert: None,
        };
        AgentNode::new(NodeId::new(self.endpoint.as_str()), component, &ep).unwrap()
    }

    /// A Start of `tablet` called with the generated client, as a caller that may go away:
    /// the client and the progress stream.
    async fn raw_start(
        &self,
    ) -> (
        proto::agent_client::AgentClient<tonic::transport::Channel>,
        tonic::Streaming<proto::Progress>,
    ) {
        let channel = tonic::transport::Endpoint::from_shared(self.agent.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = proto::agent_client::AgentClient::new(channel);
        let mut req = tonic::Request::new(proto::ComponentRequest {
            component: "tablet".into(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let stream = client.start(req).await.unwrap().into_inner();
        (client, stream)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Ok(pid) = self.read("bin/tablet.pid").trim().parse::<u32>() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn greeting(value: &str) -> Change {
    Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/tablet.flags".into(),
            key: "greeting".into(),
            value: value.into(),
        }],
    }
}

#[tokio::test]
async fn a_restart_through_the_agent_starts_a_new_incarnation() {
    let s = Setup::new("--version 2.0.1", &["conf/tablet.flags"]).await;
    let node = s.node(TOKEN, "tablet");
    node.start().await.unwrap();
    let first = node.status().await.unwrap();
    assert!(first.running && first.boot.is_some(), "{first:?}");
    assert_eq!(first.version.as_deref(), Some("2.0.1"));
    node.stop().await.unwrap();
    assert!(!node.status().await.unwrap().running);
    node.start().await.unwrap();
    let second = node.status().await.unwrap();
    assert!(second.running && second.boot != first.boot, "{second:?}");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_config_edit_through_the_agent_is_backed_up_and_reverted() {
    let s = Setup::new("", &["conf/tablet.flags"]).await;
    let node = s.node(TOKEN, "tablet");
    let original = s.read("conf/tablet.flags");
    let record = node.apply(&greeting("bonjour")).await.unwrap();
    assert_eq!(s.read("conf/tablet.flags.bak"), original);
    assert!(s.read("conf/tablet.flags").contains("--greeting=bonjour"));
    node.revert(&record).await.unwrap();
    assert_eq!(s.read("conf/tablet.flags"), original);
    assert!(!s.dir.path().join("conf/tablet.flags.bak").exists());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_and_nothing_is_done() {
    let s = Setup::new("", &["conf/tablet.flags"]).await;
    for token in ["not-the-token-but-just-as-long!!", ""] {
        let node = s.node(token, "tablet");
        let e = node.start().await.unwrap_err().to_string();
        assert!(e.contains("bearer token"), "{e}");
        let e = node.apply(&greeting("x")).await.unwrap_err().to_string();
        assert!(e.contains("bearer token"), "{e}");
    }
    assert!(!s.dir.path().join("bin/tablet.pid").exists(), "a start ran");
    assert!(!s.read("conf/tablet.flags").contains("--greeting=x"));
}

#[tokio::test]
async fn an_unknown_component_is_refused_naming_it() {
    let s = Setup::new("", &["conf/tablet.flags"]).await;
    let e = s
        .node(TOKEN, "nameserver")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nameserver\"") && e.contains("tablet"), "{e}");
    assert!(!s.dir.path().join("bin/tablet.pid").exists());
}

#[tokio::test]
async fn edits_that_leave_the_deploy_dir_are_refused_with_nothing_changed() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.flags");
    std::fs::write(&secret, "--greeting=keep\n").unwrap();
    let s = Setup::new("", &["conf/tablet.flags", "conf/link.flags"]).await;
    std::os::unix::fs::symlink(&secret, s.dir.path().join("conf/link.flags")).unwrap();
    let node = s.node(TOKEN, "tablet");
    let traversal = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/../../etc/passwd".into(),
            key: "root".into(),
            value: "x".into(),
        }],
    };
    let e = node.apply(&traversal).await.unwrap_err().to_string();
    assert!(e.contains("leaves the deploy dir"), "{e}");
    let link = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/link.flags".into(),
            key: "greeting".into(),
            value: "changed".into(),
        }],
    };
    let e = node.apply(&link).await.unwrap_err().to_string();
    assert!(e.contains("outside the deploy dir"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "--greeting=keep\n"
    );
    assert!(!outside.path().join("secret.flags.bak").exists());
}

#[tokio::test]
async fn a_file_the_component_does_not_have_is_a_refusal_through_the_agent() {
    let s = Setup::new("", &["conf/tablet.flags"]).await;
    let node = s.node(TOKEN, "tablet");
    let missing = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/nothing.flags".into(),
            key: "greeting".into(),
            value: "x".into(),
        }],
    };
    // Asked while a plan is read: the agent refuses it as invalid input, and the client
    // says so (a command then exits 2 instead of failing the run).
    let e = node.is_applied(&missing).await.unwrap_err();
    assert!(e.is_refusal(), "{e:?}");
    assert!(e.to_string().contains("conf/nothing.flags"), "{e}");
    // A failure that is not a refusal stays one: an unknown component.
    let other = s.node(TOKEN, "no-such-component");
    let e = other.is_applied(&missing).await.unwrap_err();
    assert!(!e.is_refusal(), "{e:?}");
}

#[tokio::test]
async fn a_client_that_disconnects_in_the_middle_of_a_start_leaves_the_component_running() {
    // A start that takes two seconds: the caller leaves well before it ends.
    let s = Setup::starting_after("", &["conf/tablet.flags"], "sleep 2;").await;
    let (client, mut stream) = s.raw_start().await;
    // The first progress message, then the caller goes away.
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.done, "{first:?}");
    drop(stream);
    drop(client);
    let node = s.node(TOKEN, "tablet");
    assert!(
        !node.status().await.unwrap().running,
        "the start ended before the caller left"
    );
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let st = node.status().await.unwrap();
        let up = st.running && std::net::TcpStream::connect(s.endpoint.as_str()).is_ok();
        if up {
            break;
        }
        assert!(Instant::now() < until, "the start did not finish: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_operation_on_a_busy_component_is_refused() {
    // A start that takes two seconds, so that it is still running at the second call.
    let s = Setup::starting_after("", &["conf/tablet.flags"], "sleep 2;").await;
    let (_client, mut first) = s.raw_start().await;
    // The first message comes from the operation that holds the component.
    assert!(!first.message().await.unwrap().unwrap().done);
    let node = s.node(TOKEN, "tablet");
    let e = node.stop().await.unwrap_err().to_string();
    assert!(e.contains("another operation on component tablet"), "{e}");
    // The first one ends as it would have.
    let last = first.message().await.unwrap().unwrap();
    assert!(last.done && last.error.is_none(), "{last:?}");
    assert!(node.status().await.unwrap().running);
    node.stop().await.unwrap();
}

/// A CA, and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test]
async fn with_tls_the_agent_answers_only_a_client_that_trusts_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let (other_ca, _, _) = certificates();
    let path = |name: &str, text: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (ca, other_ca) = (path("ca.pem", &ca), path("other-ca.pem", &other_ca));
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        path("agent.crt", &cert).display().to_string(),
        path("agent.key", &key).display().to_string()
    );
    let s = Setup::build("", &["conf/tablet.flags"], "", &tls).await;
    let https = s.agent.replace("http://127.0.0.1", "https://localhost");
    let node = |url: &str, ca: Option<&std::path::Path>| {
        let ep = AgentEndpoint {
            url: url.to_string(),
            token: TOKEN.to_string(),
            ca_cert: ca.map(std::path::Path::to_path_buf),
        };
        AgentNode::new(NodeId::new(s.endpoint.as_str()), "tablet", &ep).unwrap()
    };
    let trusted = node(&https, Some(&ca));
    assert!(!trusted.status().await.unwrap().running);
    trusted.start().await.unwrap();
    assert!(trusted.status().await.unwrap().running);
    // A client that trusts another CA, and one that speaks plain HTTP/2, get nothing.
    let refused = node(&https, Some(&other_ca)).status().await.unwrap_err();
    assert!(refused.to_string().contains(&s.endpoint), "{refused}");
    assert!(node(&s.agent, None).status().await.is_err());
    assert!(node(&s.agent, None).stop().await.is_err());
    assert!(
        trusted.status().await.unwrap().running,
        "an untrusted call stopped it"
    );
    trusted.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_that_cannot_be_reached_is_a_transient_error_naming_the_node() {
    let ep = AgentEndpoint {
        url: format!("http://127.0.0.1:{}", free_port()),
        token: TOKEN.to_string(),
        ca_cert: None,
    };
    let node = AgentNode::new(NodeId::new("10.0.0.7:10921"), "tablet", &ep).unwrap();
    let e = node.status().await.unwrap_err();
    assert_eq!(e.class(), rollout_core::ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("10.0.0.7:10921"), "{e}");
    // A refusal is not transient: retrying cannot help.
    let s = Setup::new("", &["conf/tablet.flags"]).await;
    let e = s
        .node("not-the-token-but-just-as-long!!", "tablet")
        .status()
        .await
        .unwrap_err();
    assert_eq!(e.class(), rollout_core::ErrorClass::Fatal, "{e}");
}

#[tokio::test]
async fn every_call_is_audited_with_its_caller_and_result_refused_ones_too() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("audit.jsonl");
    let top = format!("audit_log = {:?}", log.display().to_string());
    let s = Setup::build("", &["conf/tablet.flags"], "", &top).await;
    // Refused before it is read: a wrong token.
    let e = s
        .node("not-the-token-but-just-as-long!!", "tablet")
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bearer token"), "{e}");
    // Refused by the agent: a component it does not have.
    assert!(s.node(TOKEN, "nameserver").start().await.is_err());
    // Done.
    s.node(TOKEN, "tablet").start().await.unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |component: &str, action: &str, result: &str| {
        lines.iter().any(|l| {
            l["component"] == component
                && l["action"] == action
                && l["result"].as_str().unwrap_or_default().starts_with(result)
                && l["caller"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("127.0.0.1:")
                && l["at"].as_f64().is_some_and(|t| t > 1.0e9)
        })
    };
    assert!(
        has("-", "call", "refused: missing or wrong bearer token"),
        "{lines:#?}"
    );
    assert!(
        has(
            "nameserver",
            "start",
            "refused: this agent has no component"
        ),
        "{lines:#?}"
    );
    assert!(has("tablet", "start", "started"), "{lines:#?}");
    assert!(has("tablet", "start", "done"), "{lines:#?}");
}

#[test]
fn the_agent_config_is_checked_against_the_cluster_files_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let agent = rollout_process::agent::AgentConfig::from_toml(
        &dir.path().join("agent.toml").display().to_string(),
        r#"
listen = "127.0.0.1:7070"
token_file = "token"
[components.tablet]
id = "10.0.0.7:10921"
deploy_dir = "/opt/openmldb"
start = "bash bin/start.sh start tablet"
stop = "bash bin/start.sh stop tablet"
pid_file = "bin/tablet.pid"
"#,
    )
    .unwrap();
    let cluster = |id: &str, component: &str| {
        format!(
            r#"
[[nodes]]
reach = "agent"
id = "{id}"
component = "{component}"
agent = {{ url = "http://10.0.0.7:7070", token_file = "token" }}
"#
        )
    };
    agent
        .check_cluster_file("cluster.toml", &cluster("10.0.0.7:10921", "tablet"))
        .unwrap();
    let e = agent
        .check_cluster_file("cluster.toml", &cluster("10.0.0.8:10921", "tablet"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no node 10.0.0.7:10921") && e.contains("cluster.toml"),
        "{e}"
    );
    let e = agent
        .check_cluster_file("cluster.toml", &cluster("10.0.0.7:10921", "nameserver"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("component = nameserver") && e.contains("tablet"),
        "{e}"
    );
}
