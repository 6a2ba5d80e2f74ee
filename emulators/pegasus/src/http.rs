//! HTTP on the RPC port, per version (docs/upstream/pegasus.md §1.2 and §5; `http_server.cpp`,
//! `builtin_http_calls.cpp`, `config_http_service.cpp`, `metrics.cpp`,
//! `perf_counter_http_service.cpp` at each tag): `/version`, `/recentStartTime`,
//! `/config?name=`, `/perfCounter?name=` (2.4/2.5), `/metrics` (master; 2.4 and 2.5 answer
//! 404). Requests on one connection are answered in turn, as the server keeps it open.

use rollout_core::NodeId;
use rollout_sim::SimCluster;
use rollout_sim::emulation::NodeView;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Directory;
use crate::clock::wall_time;
use crate::version::ServerVersion;

/// Serves HTTP requests on `stream` until the peer closes it.
pub(crate) async fn serve(stream: &mut TcpStream, sim: &SimCluster, dir: &Directory, me: &NodeId) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut line = head.split_whitespace();
        let method = line.next().unwrap_or_default();
        let target = line.next().unwrap_or("/");
        let (status, body) = match sim.node_view(me) {
            Some(node) if method == "GET" => answer(sim, dir, &node, target).await,
            Some(_) => (400, "{\"error_message\":\"only GET is served\"}".into()),
            None => (404, String::new()),
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            _ => "Not Found",
        };
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request's status and body.
async fn answer(sim: &SimCluster, dir: &Directory, node: &NodeView, target: &str) -> (u16, String) {
    let v = dir.version_of(node);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
    };
    match path {
        "/version" => {
            // A collector never fills them (`pegasus_service_app.h`).
            let (ver, commit) = if node.role == "collector" {
                ("", "")
            } else {
                (v.release(), v.commit())
            };
            (
                200,
                format!("{{\"Version\":\"{ver}\",\"GitCommit\":\"{commit}\"}}\n"),
            )
        }
        "/recentStartTime" => (
            200,
            format!(
                "{{\"RecentStartTime\":\"{}\"}}\n",
                wall_time(node.started_ms)
            ),
        ),
        "/config" => match param("name") {
            Some(name) => (200, config(dir, node, v, name)),
            None => (400, "name shouldn't be empty".into()),
        },
        "/perfCounter" if v != ServerVersion::Master => (
            200,
            perf_counter(sim, dir, node, param("name").unwrap_or("")).await,
        ),
        "/metrics" if v == ServerVersion::Master => (200, metrics(sim, dir, node).await),
        _ => (
            404,
            format!("service not found for \"{}\"", path.trim_start_matches('/')),
        ),
    }
}

/// `/config?name=`: the flag as a compact object of strings, or the error text with status
/// 200 (`config_http_service::get_config`, `flag_data::to_table_printer`). Both freeze
/// thresholds are meta flags; 2.4 keeps the live percentage in `meta_options`, not a flag,
/// and master's meta and replica servers are separate binaries. The failure detector's
/// `fd_grace_seconds` and `fd_check_interval_seconds` are flags of the common library on 2.5
/// and master (`common/replication_common.cpp`), and `replication_options` read from
/// `config.ini` on 2.4; they are the model's `Timings::detect` and what
/// `Timings::election_grace` adds to it.
fn config(dir: &Directory, node: &NodeView, v: ServerVersion, name: &str) -> String {
    let t = &dir.timings;
    let meta_flags = node.role == "meta" || v != ServerVersion::Master;
    // Whole seconds rounded up: never a shorter grace than the world's.
    let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000).to_string();
    let fd = v != ServerVersion::V2_4;
    let flag = match name {
        "fd_grace_seconds" if fd => Some((
            "replication",
            "FV_INT32",
            "",
            if v == ServerVersion::Master {
                "The grace in seconds assigned to remote FD slaves"
            } else {
                "grace (seconds) assigned to remote FD slaves (grace > lease)"
            },
            secs(t.detect),
        )),
        "fd_check_interval_seconds" if fd => Some((
            "replication",
            "FV_INT32",
            "",
            if v == ServerVersion::Master {
                "The interval seconds of failure detector to check healthiness of remote peers"
            } else {
                "every this period(seconds) the FD will check healthness of remote peers"
            },
            secs(t.election_grace.saturating_sub(t.detect)),
        )),
        "min_live_node_count_for_unfreeze" if meta_flags => Some((
            "meta_server",
            "FV_UINT64",
            "flag_tag::FT_MUTABLE",
            "minimum live node count without which the state is freezed",
            t.min_live.to_string(),
        )),
        "node_live_percentage_threshold_for_update" if meta_flags && v != ServerVersion::V2_4 => {
            Some((
                "meta_server",
                if v == ServerVersion::Master {
                    "FV_INT32"
                } else {
                    "FV_UINT64"
                },
                "",
                "if live_node_count * 100 < total_node_count * the threshold, the meta freezes",
                t.live_percentage.to_string(),
            ))
        }
        _ => None,
    };
    match flag {
        Some((section, ty, tags, description, value)) => format!(
            "{{\"name\":\"{name}\",\"section\":\"{section}\",\"type\":\"{ty}\",\"tags\":\"{tags}\",\"description\":\"{description}\",\"value\":\"{value}\"}}\n"
        ),
        None if v == ServerVersion::Master => {
            format!("ERR_OBJECT_NOT_FOUND: '{name}' is not found")
        }
        None => format!("ERR_OBJECT_NOT_FOUND: {name} is not found"),
    }
}

/// `/perfCounter?name=` (2.4/2.5): the counter's live value, or `{}` for an unknown name.
async fn perf_counter(sim: &SimCluster, dir: &Directory, node: &NodeView, name: &str) -> String {
    let live = match name {
        "replica*eon.replica_stub*replica(Count)" if node.role == "replica" => {
            Some(crate::commands::replica_counts(sim, dir, node).await.0)
        }
        "replica*eon.replica_stub*closing.replica(Count)" if node.role == "replica" => {
            Some(crate::commands::replica_counts(sim, dir, node).await.1)
        }
        "replica*eon.replica_stub*opening.replica(Count)" if node.role == "replica" => Some(0),
        _ => None,
    };
    match live {
        Some(v) => format!(
            "{{\"name\":\"{name}\",\"value\":\"{v}.000000\",\"type\":\"NUMBER\",\"description\":\"\"}}\n"
        ),
        None => "{}\n".into(),
    }
}

/// Master's `/metrics`: one object with the server's entities; a replica server's `server`
/// entity has the replica gauges, a meta's the replica servers it counts alive and not.
async fn metrics(sim: &SimCluster, dir: &Directory, node: &NodeView) -> String {
    let port = dir.addr_of(&node.id).map_or(0, |a| a.port());
    let metrics = match node.role {
        "replica" => {
            let (open, closing) = crate::commands::replica_counts(sim, dir, node).await;
            serde_json::json!([
                {"name": "closing_replicas", "value": closing},
                {"name": "inactive_replicas", "value": 0},
                {"name": "opening_replicas", "value": 0},
                {"name": "total_replicas", "value": open},
            ])
        }
        "meta" => {
            let view = sim.view();
            let data = view.nodes.iter().filter(|n| n.role == "replica");
            let alive = data.clone().filter(|n| n.alive).count();
            let unalive = data.count() - alive;
            serde_json::json!([
                {"name": "alive_replica_servers", "value": alive},
                {"name": "unalive_replica_servers", "value": unalive},
            ])
        }
        _ => serde_json::json!([]),
    };
    serde_json::json!({
        "cluster": "emulated",
        "role": node.role,
        "host": "localhost",
        "port": port,
        "timestamp_ns": sim.view().now_ms * 1_000_000,
        "entities": [{"type": "server", "id": "server", "attributes": {}, "metrics": metrics}],
    })
    .to_string()
}
