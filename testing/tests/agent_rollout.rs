//! A rollout through the core engine of three test servers on loopback, each on a "host" of
//! its own with its own node agent, each restarted (with a config change) through its agent.

use std::time::Duration;

use rollout_core::{
    Change, Cluster, ConfigEdit, ErrorClass, Health, HealthProbe, Knob, MemoryJournal, Node,
    NodeId, NodeInfo, Outcome, Procedure, Role, RoleKind, Run, Spec, Topology,
    probe::{probe_fn, probes},
    roll,
};
use rollout_process::agent::{AgentEndpoint, AgentNode};
use rollout_process::{ProcessError, shell_quote};

mod support;
use support::{SERVER, free_port, lay_out, spawn_agent};
const TOKEN: &str = "a-token-of-thirty-two-characters";

/// One host: a deploy dir and the agent that serves its `server` component.
struct Host {
    dir: tempfile::TempDir,
    endpoint: String,
    node: AgentNode,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let endpoint = format!("127.0.0.1:{}", free_port());
    lay_out(root, "server", &endpoint);
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let start = format!(
        "ROLLOUT_TEST_SERVER={} SERVER_ARGS={} bash bin/start.sh start server",
        shell_quote(SERVER),
        shell_quote("--config conf/server.flags")
    );
    let toml = format!(
        r#"
listen = "127.0.0.1:1"
token_file = {token:?}
[components.server]
id = "{endpoint}"
runner = {{ kind = "local" }}
deploy_dir = {dir:?}
start = {start:?}
stop = "bash bin/start.sh stop server"
pid_file = "bin/server.pid"
listen = "{endpoint}"
health_url = "http://{endpoint}/status"
config_files = ["conf/server.flags"]
start_timeout_secs = 20
stop_timeout_secs = 5
"#,
        token = root.join("token").display().to_string(),
        dir = root.display().to_string(),
    );
    let (url, stop) = spawn_agent(&toml).await;
    let ep = AgentEndpoint {
        url,
        token: TOKEN.into(),
        ca_cert: None,
    };
    let node = AgentNode::new(NodeId::new(endpoint.as_str()), "server", &ep).unwrap();
    node.start().await.unwrap();
    Host {
        dir,
        endpoint,
        node,
        _stop: stop,
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("bin/server.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

/// Three stateless servers: a cluster with no partitions, healthy when every server runs
/// and accepts connections.
struct Trio(Vec<Host>);

impl Trio {
    fn host(&self, id: &NodeId) -> Option<&Host> {
        self.0.iter().find(|h| h.node.id() == id)
    }

    async fn up(&self, h: &Host) -> Result<bool, ProcessError> {
        Ok(h.node.status().await?.running
            && tokio::net::TcpStream::connect(h.endpoint.as_str())
                .await
                .is_ok())
    }
}

impl Cluster for Trio {
    type Node = AgentNode;
    type Error = ProcessError;

    fn name(&self) -> &str {
        "three test servers"
    }

    async fn topology(&self) -> Result<Topology, ProcessError> {
        let role = Role::new("server", RoleKind::Data, 0);
        let mut nodes = Vec::new();
        for h in &self.0 {
            nodes.push(NodeInfo::new(h.node.id().clone(), role.clone()).alive(self.up(h).await?));
        }
        Ok(Topology::new(nodes, Vec::new()))
    }

    fn node(&self, id: &NodeId) -> Option<AgentNode> {
        self.host(id).map(|h| h.node.clone())
    }

    fn knobs(&self, _: Procedure) -> Vec<Knob> {
        Vec::new()
    }

    async fn read_knob(&self, name: &str) -> Result<String, ProcessError> {
        Err(ProcessError::InvalidConfig {
            at: "trio".into(),
            reason: format!("no knob {name}"),
        })
    }

    async fn write_knob(&self, name: &str, _: &str) -> Result<(), ProcessError> {
        self.read_knob(name).await.map(drop)
    }

    async fn drain(&self, _: &NodeId) -> Result<(), ProcessError> {
        Ok(())
    }

    fn drained<'a>(&'a self, _: &'a NodeId) -> impl HealthProbe<Error = ProcessError> + 'a {
        probes::always()
    }

    async fn quiesce(&self, _: &NodeId) -> Result<(), ProcessError> {
        Ok(())
    }

    fn quiesced<'a>(&'a self, _: &'a NodeId) -> impl HealthProbe<Error = ProcessError> + 'a {
        probes::always()
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = ProcessError> + 'a {
        probe_fn(move || async move {
            let h = self.host(node).expect("a node of the trio");
            Ok(if self.up(h).await? {
                Health::Healthy
            } else {
                Health::waiting(format!("{node} does not answer yet"))
            })
        })
    }

    async fn rejoin(&self, _: &NodeId) -> Result<(), ProcessError> {
        Ok(())
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = ProcessError> + 'a {
        self.ready(node)
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = ProcessError> + '_ {
        probe_fn(move || async move { Ok(probes::topology_fully_healthy(&self.topology().await?)) })
    }

    fn safe_to_stop<'a>(&'a self, _: &'a NodeId) -> impl HealthProbe<Error = ProcessError> + 'a {
        probes::always()
    }

    fn classify(&self, e: &ProcessError) -> ErrorClass {
        e.class()
    }
}

#[tokio::test]
async fn a_rollout_of_three_servers_restarts_each_once_through_its_agent() {
    let trio = Trio(vec![host().await, host().await, host().await]);
    let mut boots = Vec::new();
    for h in &trio.0 {
        boots.push(h.node.status().await.unwrap().boot);
    }
    let change = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/server.flags".into(),
            key: "greeting".into(),
            value: "bonjour".into(),
        }],
    };
    let mut spec = Spec::new(change.clone());
    spec.policy = spec
        .policy
        .clone()
        .poll(Duration::from_millis(50), Duration::from_millis(200));
    let journal = MemoryJournal::new();
    let report = roll(&trio, &spec, Run::new(&journal)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:?}");
    assert_eq!(report.rolled.len(), 3, "{report:?}");
    for (h, before) in trio.0.iter().zip(boots) {
        let now = h.node.status().await.unwrap();
        assert!(now.running && now.boot != before, "{}: {now:?}", h.endpoint);
        assert!(h.node.is_applied(&change).await.unwrap(), "{}", h.endpoint);
        let text = std::fs::read_to_string(h.dir.path().join("conf/server.flags")).unwrap();
        assert!(text.contains("--greeting=bonjour"), "{text}");
        // Started twice in all: once before the rollout, once by it.
        let log = std::fs::read_to_string(h.dir.path().join("logs/server.log")).unwrap();
        assert_eq!(log.matches(" listening on ").count(), 2, "{log}");
    }
}
