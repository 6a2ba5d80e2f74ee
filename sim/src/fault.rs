//! Faults the simulator injects, and their text form for `--fault`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which node a fault hits: the n-th data node (1-based) or a node by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeRef {
    /// The n-th data node, counting from 1.
    Data(usize),
    /// A node by its address, such as `replica-2:34801`.
    Addr(String),
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Data(n) => write!(f, "{n}"),
            Self::Addr(a) => f.write_str(a),
        }
    }
}

/// One injected fault.
///
/// Text form: `KIND[:key=value,...]`, times in seconds (`90`, `90s`, `500ms`, `2m`):
///
/// | spec | meaning |
/// | --- | --- |
/// | `crash:node=2,at=120` | the process dies at 120 s; its supervisor starts it 30 s later |
/// | `slow-start:node=2,extra=60` | every start of the node takes 60 s longer |
/// | `fail-start:node=2` | the node crash-loops: every start exits after a few seconds |
/// | `stuck-drain:node=2` | proposals that move the node's primaries or leaders never run |
/// | `leader-failover:at=300` | the coordinator leader crashes at 300 s and comes back |
/// | `transient:p=0.05` | each control-plane call fails with a transient error with this probability |
/// | `partition:node=2,at=100,for=40` | the coordinators lose contact with the node for 40 s |
/// | `orchestrator-crash:step=5` | the orchestrator dies after its 5th journal record and resumes |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// The process dies at `at`.
    Crash {
        /// The node.
        node: NodeRef,
        /// When, from the start of the simulation.
        at: Duration,
    },
    /// Starts take `extra` longer.
    SlowStart {
        /// The node.
        node: NodeRef,
        /// The extra start time.
        extra: Duration,
    },
    /// Every start exits after a few seconds.
    FailStart {
        /// The node.
        node: NodeRef,
    },
    /// Moves of the node's primaries or leaders never run.
    StuckDrain {
        /// The node.
        node: NodeRef,
    },
    /// The coordinator leader crashes at `at` and restarts.
    LeaderFailover {
        /// When.
        at: Duration,
    },
    /// Control-plane calls fail with a transient error with probability `p`.
    Transient {
        /// The probability, 0 to 1.
        p: f64,
    },
    /// The coordinators lose contact with the node from `at` for `duration`.
    Partition {
        /// The node.
        node: NodeRef,
        /// When.
        at: Duration,
        /// For how long.
        duration: Duration,
    },
    /// The orchestrator dies after its `step`-th journal record, then resumes from the journal.
    OrchestratorCrash {
        /// The journal record count at which it dies.
        step: usize,
    },
}

/// Parses a duration: `90`, `90s`, `500ms`, `2m`.
fn duration(v: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (try 90, 90s, 500ms or 2m)"))?;
    if !x.is_finite() || x < 0.0 || x * mul > 1e9 {
        return Err(format!("{v:?} is not a duration between 0 and 10^9 s"));
    }
    Ok(Duration::from_secs_f64(x * mul))
}

fn node_ref(v: &str) -> Result<NodeRef, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("node numbers count from 1".into()),
        Ok(n) => Ok(NodeRef::Data(n)),
        Err(_) if v.contains(':') => Ok(NodeRef::Addr(v.to_string())),
        Err(_) => Err(format!(
            "node {v:?} is neither a data node number nor a host:port address"
        )),
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (kind, args) = spec.split_once(':').unwrap_or((spec, ""));
        let mut kv = Vec::new();
        for part in args.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("fault {spec:?}: {part:?} is not key=value"))?;
            kv.push((k.trim(), v.trim()));
        }
        let allowed: &[&str] = match kind {
            "crash" => &["node", "at"],
            "slow-start" => &["node", "extra"],
            "fail-start" | "stuck-drain" => &["node"],
            "leader-failover" => &["at"],
            "transient" => &["p"],
            "partition" => &["node", "at", "for"],
            "orchestrator-crash" => &["step"],
            other => {
                return Err(format!(
                    "unknown fault {other:?}: expected crash, slow-start, fail-start, stuck-drain, \
                     leader-failover, transient, partition or orchestrator-crash"
                ));
            }
        };
        if let Some((k, _)) = kv.iter().find(|(k, _)| !allowed.contains(k)) {
            return Err(format!(
                "fault {kind}: unknown key {k:?} (it takes {})",
                allowed.join(", ")
            ));
        }
        let get = |k: &str| -> Result<&str, String> {
            kv.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    format!(
                        "fault {kind} needs {k}=... (it takes {})",
                        allowed.join(", ")
                    )
                })
        };
        let fault = match kind {
            "crash" => Self::Crash {
                node: node_ref(get("node")?)?,
                at: duration(get("at")?)?,
            },
            "slow-start" => Self::SlowStart {
                node: node_ref(get("node")?)?,
                extra: duration(get("extra")?)?,
            },
            "fail-start" => Self::FailStart {
                node: node_ref(get("node")?)?,
            },
            "stuck-drain" => Self::StuckDrain {
                node: node_ref(get("node")?)?,
            },
            "leader-failover" => Self::LeaderFailover {
                at: duration(get("at")?)?,
            },
            "transient" => {
                let p: f64 = get("p")?.parse().map_err(|_| {
                    format!(
                        "fault transient: p={} is not a number",
                        get("p").unwrap_or("")
                    )
                })?;
                if !(0.0..=0.9).contains(&p) {
                    return Err(format!("fault transient: p={p} must be between 0 and 0.9"));
                }
                Self::Transient { p }
            }
            "partition" => Self::Partition {
                node: node_ref(get("node")?)?,
                at: duration(get("at")?)?,
                duration: duration(get("for")?)?,
            },
            _ => {
                let step: usize = get("step")?.parse().map_err(|_| {
                    "fault orchestrator-crash: step must be a whole number".to_string()
                })?;
                if step == 0 {
                    return Err("fault orchestrator-crash: step counts from 1".into());
                }
                Self::OrchestratorCrash { step }
            }
        };
        Ok(fault)
    }
}
