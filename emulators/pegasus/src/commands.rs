//! Remote commands (`RPC_CLI_CLI_CALL`), per version (docs/upstream/pegasus.md §4):
//! `server-info`, `config-dump`, the meta's `meta.live_percentage` and, on the leader only, the `meta.lb.*`
//! knobs; a replica server's `replica.kill_partition` and `perf-counters`; and the state a
//! replica server reports of its replicas.

use std::collections::BTreeSet;

use rollout_core::{Cluster, HealthProbe, NodeId};
use rollout_sim::SimCluster;
use rollout_sim::emulation::{NodeView, PartitionView};

use crate::clock::wall_time;
use crate::version::ServerVersion;
use crate::wire::idl::{Command, ReplicaOut};
use crate::{COUNTER_PERIOD_MS, Counters, Directory};

/// The `meta.lb.*` knobs a leader registers once it holds the lock
/// (`partition_guardian::register_ctrl_commands`, `server_state::register_cli_commands`).
const ASSIGN_DELAY: &str = "meta.lb.assign_delay_ms";
const FLOW_CONTROL: &str = "meta.lb.add_secondary_enable_flow_control";
const MAX_COUNT: &str = "meta.lb.add_secondary_max_count_for_one_node";

/// The text a command answers on `node`.
pub(crate) async fn answer(
    sim: &SimCluster,
    dir: &Directory,
    node: &NodeView,
    v: ServerVersion,
    c: &Command,
) -> String {
    let unknown = || format!("unknown command '{}'", c.cmd);
    match (c.cmd.as_str(), node.role) {
        ("server-info", _) => server_info(node, v),
        ("config-dump", _) if c.args.is_empty() => config_dump(dir),
        ("perf-counters", _) => perf_counters(dir, node, v, c.args.first().map(String::as_str)),
        ("meta.live_percentage", "meta") => {
            let value = dir.timings.live_percentage.to_string();
            match (v.json_commands(), c.args.is_empty()) {
                (false, true) => value,
                (true, true) => json(&[("error", "ok".into()), (&c.cmd, value.into())]),
                // The emulator keeps the world's threshold: a change is not emulated.
                (false, false) => "ERR: invalid arguments".into(),
                (true, false) => json(&[(
                    "error",
                    "ERR: the emulator does not change meta.live_percentage".into(),
                )]),
            }
        }
        (name @ (ASSIGN_DELAY | FLOW_CONTROL | MAX_COUNT), "meta") => {
            if sim.view().leader.as_ref() != Some(&node.id) {
                // Registered only after the leader lock (`meta_service::start`).
                return unknown();
            }
            knob(sim, v, name, &c.args).await
        }
        ("replica.kill_partition", "replica") => kill_partition(sim, dir, node, &c.args).await,
        ("help", _) => "help|repeat|server-info|perf-counters|...".into(),
        _ => unknown(),
    }
}

/// `config-dump` (`dsn_run` in `runtime/service_api_c.cpp`, `configuration::dump` in
/// `utils/configuration.cpp` @v2.4.0): every key the process read, per `[section]`, each
/// as a `; description` line and `key = value`. The emulator's process read only what the
/// model has: the failure detector's grace (`Timings::detect`) and check interval (what
/// `Timings::election_grace` adds to it), as 2.4 reads them (`replication_options`).
fn config_dump(dir: &Directory) -> String {
    let t = &dir.timings;
    // Whole seconds rounded up, as the flags are: never a shorter grace than the world's.
    let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000);
    let check = secs(t.election_grace.saturating_sub(t.detect));
    format!(
        "[replication]\n\
         ; every this period(seconds) the FD will check healthness of remote peers\n\
         fd_check_interval_seconds = {check}\n\n\
         ; grace (seconds) assigned to remote FD slaves (grace > lease)\n\
         fd_grace_seconds = {}\n\n\n",
        secs(t.detect)
    )
}

/// `server-info`: plain text on 2.4/2.5 (`src/server/main.cpp`), compact JSON with sorted
/// keys on master (`server_utils.cpp` `register_server_info_cmd`).
fn server_info(node: &NodeView, v: ServerVersion) -> String {
    let started = wall_time(node.started_ms);
    if v.json_commands() {
        serde_json::json!({
            "build_type": "Release",
            "git_SHA": v.commit(),
            "start_time": started,
            "version": v.release(),
        })
        .to_string()
    } else {
        format!(
            "Pegasus Server {} ({}) Release, Started at {started}",
            v.release(),
            v.commit()
        )
    }
}

/// A JSON object as nlohmann's `dump(2)` prints it: keys sorted, two-space indent.
fn json(pairs: &[(&str, serde_json::Value)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default()
}

/// An integer as C's `strtoll` with base 0 reads a whole string (`buf2int64`): a sign, then
/// `0x` hex, a leading `0` octal, or decimal.
fn c_integer(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, body) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// A `meta.lb.*` knob queried or set, as the version answers: plain `OK`, the bare value or
/// `ERR: invalid arguments` on 2.4/2.5 (only the first argument read), pretty JSON on master
/// (`command_manager::set_int`, `set_bool` @master).
async fn knob(sim: &SimCluster, v: ServerVersion, name: &str, args: &[String]) -> String {
    let view = sim.view();
    let current = view.knobs.get(name).cloned().unwrap_or_default();
    let default = view.knob_defaults.get(name).cloned().unwrap_or_default();
    let boolean = name == FLOW_CONTROL;
    if !v.json_commands() {
        let Some(arg) = args.first() else {
            return current;
        };
        let value = if arg == "DEFAULT" && !boolean {
            Some(default)
        } else if boolean {
            (arg == "true" || arg == "false").then(|| arg.clone())
        } else {
            let min = if name == ASSIGN_DELAY { 1 } else { 0 };
            c_integer(arg)
                .filter(|n| (min..=i64::from(i32::MAX)).contains(n))
                .map(|n| n.to_string())
        };
        return match value {
            Some(value) => match Cluster::write_knob(sim, name, &value).await {
                Ok(()) => "OK".into(),
                Err(e) => format!("ERR: {e}"),
            },
            None => "ERR: invalid arguments".into(),
        };
    }
    let ok = || json(&[("error", "ok".into())]);
    let err = |e: String| json(&[("error", e.into())]);
    match args {
        [] => json(&[("error", "ok".into()), (name, current.into())]),
        [arg] if boolean => match arg.to_ascii_lowercase().as_str() {
            b @ ("true" | "false") => match Cluster::write_knob(sim, name, b).await {
                Ok(()) => ok(),
                Err(e) => err(format!("ERR: {e}")),
            },
            _ => err(format!("ERR: invalid arguments, '{arg}' is not a boolean")),
        },
        [_, ..] if boolean => {
            err("ERR: invalid arguments, only one boolean argument is acceptable".into())
        }
        [arg] if arg.eq_ignore_ascii_case("DEFAULT") => {
            match Cluster::write_knob(sim, name, &default).await {
                Ok(()) => {
                    let n: i64 = default.parse().unwrap_or_default();
                    json(&[("error", "ok".into()), (name, n.into())])
                }
                Err(e) => err(format!("ERR: {e}")),
            }
        }
        [arg] => {
            let max = if name == ASSIGN_DELAY {
                i64::MAX
            } else {
                i64::from(i32::MAX)
            };
            match arg.parse::<i64>().ok().filter(|n| (0..=max).contains(n)) {
                Some(n) => match Cluster::write_knob(sim, name, &n.to_string()).await {
                    Ok(()) => ok(),
                    Err(e) => err(format!("ERR: {e}")),
                },
                None => err(format!(
                    "ERR: invalid argument '{arg}', the value is not acceptable"
                )),
            }
        }
        _ => err(format!(
            "ERR: invalid arguments '{}', only one argument is acceptable",
            args.join(" ")
        )),
    }
}

/// `replica.kill_partition [APP [PIDX]]` (`replica_stub::register_ctrl_command` and
/// `on_kill_replica`, the same on every version): arguments read with C's `atoi` into an
/// `int`, a missing one as -1; three or more are `ERR_INVALID_PARAMETERS`. With -1 in either
/// place every open replica of the app (of every app when APP is -1) closes, whatever PIDX
/// says, and the answer is `ERR_OK` even when none matched; otherwise `ERR_OK` when that
/// replica is open (it closes) and `ERR_OBJECT_NOT_FOUND` when not (closing, closed or
/// unknown). Only the named replicas close: the others stay open. A closed replica counts as
/// closing, not open, until its flush is done; the world flushes the node once every replica
/// it holds is closed (`Timings::flush`).
async fn kill_partition(
    sim: &SimCluster,
    dir: &Directory,
    node: &NodeView,
    args: &[String],
) -> String {
    if args.len() > 2 {
        return "ERR_INVALID_PARAMETERS".into();
    }
    let app = args.first().map_or(-1, |a| c_atoi(a));
    let pidx = args.get(1).map_or(-1, |a| c_atoi(a));
    let held = held(sim, node);
    let open = open_of(dir, node, &held);
    let wildcard = app == -1 || pidx == -1;
    let closing: Vec<(u32, u32)> = open
        .iter()
        .copied()
        .filter(|&(a, i)| {
            let same_app = i64::from(a) == i64::from(app);
            if wildcard {
                app == -1 || same_app
            } else {
                same_app && i64::from(i) == i64::from(pidx)
            }
        })
        .collect();
    if !wildcard && closing.is_empty() {
        return "ERR_OBJECT_NOT_FOUND".into();
    }
    let all_closed = {
        let mut killed = dir.killed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = killed
            .entry(node.id.clone())
            .or_insert_with(|| (node.boot, BTreeSet::new()));
        if entry.0 != node.boot {
            *entry = (node.boot, BTreeSet::new());
        }
        entry.1.extend(closing);
        held.iter().all(|r| entry.1.contains(r))
    };
    if !all_closed {
        return "ERR_OK".into();
    }
    match Cluster::quiesce(sim, &node.id).await {
        Ok(()) => "ERR_OK".into(),
        Err(e) => format!("ERR_INVALID_STATE: {e}"),
    }
}

/// C's `atoi` as glibc runs it (`strtol` then a cast to `int`): leading blanks, a sign,
/// digits up to the first other character, 0 for none; a value beyond `long` saturates, and
/// the cast keeps the low 32 bits (so 4294967295 and any overflow read as -1).
fn c_atoi(s: &str) -> i32 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    // strtol saturates at LONG_MIN / LONG_MAX on overflow.
    let v = digits[..end]
        .bytes()
        .try_fold(0i64, |v, d| {
            let d = i64::from(d - b'0');
            if neg {
                v.checked_mul(10)?.checked_sub(d)
            } else {
                v.checked_mul(10)?.checked_add(d)
            }
        })
        .unwrap_or(if neg { i64::MIN } else { i64::MAX });
    v as i32
}

fn holds(node: &NodeView, p: &PartitionView) -> bool {
    let me = &node.id;
    p.primary.as_ref() == Some(me) || p.secondaries.contains(me) || p.others.contains(me)
}

/// The (app id, partition index) of every replica `node` holds.
fn held(sim: &SimCluster, node: &NodeView) -> Vec<(u32, u32)> {
    sim.view()
        .partitions
        .iter()
        .filter(|p| holds(node, p))
        .map(|p| (p.table, p.index))
        .collect()
}

/// Of `held`, those this process has not closed by `replica.kill_partition`.
fn open_of(dir: &Directory, node: &NodeView, held: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let killed = dir.killed.lock().unwrap_or_else(|e| e.into_inner());
    match killed.get(&node.id) {
        Some((boot, closed)) if *boot == node.boot => held
            .iter()
            .copied()
            .filter(|r| !closed.contains(r))
            .collect(),
        _ => held.to_vec(),
    }
}

/// Whether the node's flush after `replica.kill_partition` is done (its replicas closed).
async fn flushed(sim: &SimCluster, me: &NodeId) -> bool {
    Cluster::quiesced(sim, me)
        .check()
        .await
        .is_ok_and(|h| h.is_healthy())
}

/// How many replicas `node` has open and how many it is closing: open, those it holds that
/// `replica.kill_partition` has not closed; closing, those it closed, until the flush that
/// follows the last close is done (upstream moves a replica from `replica(Count)` to
/// `closing.replica(Count)` at `begin_close_replica` and out of it once `replica::close`,
/// which flushes, returns); both 0 after that flush.
pub(crate) async fn replica_counts(
    sim: &SimCluster,
    dir: &Directory,
    node: &NodeView,
) -> (u64, u64) {
    if flushed(sim, &node.id).await {
        return (0, 0);
    }
    let held = held(sim, node);
    let open = open_of(dir, node, &held).len();
    (open as u64, (held.len() - open) as u64)
}

/// The replicas the node knows with their `partition_status`: primary (3), secondary (4), or
/// inactive (1: a dropped one, or every one once its flush is done; a replica server lists
/// closed replicas too, `replica_stub::on_query_replica_info`).
pub(crate) async fn replica_states(
    sim: &SimCluster,
    dir: &Directory,
    node: &NodeView,
) -> Vec<ReplicaOut> {
    let flushed = flushed(sim, &node.id).await;
    let open = open_of(dir, node, &held(sim, node));
    let me = &node.id;
    sim.view()
        .partitions
        .iter()
        .filter(|p| holds(node, p))
        .map(|p| ReplicaOut {
            app: p.table as i32,
            pidx: p.index as i32,
            ballot: p.ballot as i64,
            // A closed replica keeps the status its close recorded, `PS_ERROR`
            // (`replica_stub::begin_close_replica`).
            status: if !open.contains(&(p.table, p.index)) {
                2
            } else if flushed {
                1
            } else if p.primary.as_ref() == Some(me) {
                3
            } else if p.secondaries.contains(me) {
                4
            } else {
                1
            },
        })
        .collect()
}

/// Takes a 2.4/2.5 replica server's perf-counter snapshot when one is due: every
/// `COUNTER_PERIOD_MS` from its start, the first one period after it
/// (`pegasus_counter_reporter::start`, `update`).
pub(crate) async fn snapshot_counters(sim: &SimCluster, dir: &Directory, id: &NodeId) {
    let Some(node) = sim.node_view(id) else {
        return;
    };
    if node.role != "replica" || !node.serving || dir.version_of(&node) == ServerVersion::Master {
        return;
    }
    let now = sim.view().now_ms;
    let due = {
        let counters = dir.counters.lock().unwrap_or_else(|e| e.into_inner());
        let last = counters
            .get(id)
            .filter(|c| c.boot == node.boot)
            .map_or(node.started_ms, |c| c.at_ms);
        now >= last + COUNTER_PERIOD_MS
    };
    if !due {
        return;
    }
    let (open, closing) = replica_counts(sim, dir, &node).await;
    dir.counters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            Counters {
                boot: node.boot,
                at_ms: now,
                open,
                closing,
            },
        );
}

/// `perf-counters REGEX`: the snapshot's counters whose full names the POSIX basic regular
/// expression matches whole (`perf_counters::list_snapshot_by_regexp`); a replica server on
/// 2.4/2.5 has `replica*eon.replica_stub*replica(Count)` and its `opening` and `closing`
/// siblings; before the first snapshot, and always on master (which takes none), the list
/// is empty.
fn perf_counters(dir: &Directory, node: &NodeView, v: ServerVersion, re: Option<&str>) -> String {
    let snap = dir
        .counters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&node.id)
        .copied()
        .filter(|c| c.boot == node.boot && v != ServerVersion::Master);
    let pattern = re.unwrap_or(".*");
    let mut counters = Vec::new();
    if let Some(c) = snap {
        for (name, value) in [
            ("replica*eon.replica_stub*closing.replica(Count)", c.closing),
            ("replica*eon.replica_stub*replica(Count)", c.open),
            ("replica*eon.replica_stub*opening.replica(Count)", 0),
        ] {
            if bre_matches(pattern, name) {
                counters.push(serde_json::json!({
                    "name": name, "type": "NUMBER", "value": value as f64,
                }));
            }
        }
    }
    let (ts, ts_str) = snap.map_or((0, "1970-01-01 00:00:00".to_string()), |c| {
        (c.at_ms / 1000, wall_time(c.at_ms))
    });
    // rapidjson's writer keeps the struct's field order.
    format!(
        r#"{{"result":"OK","timestamp":{ts},"timestamp_str":"{ts_str}","counters":{}}}"#,
        serde_json::Value::Array(counters)
    )
}

/// Whether POSIX basic regular expression `re` matches all of `s`: `.` any character, `*`
/// any repetition of what precedes it, and every other character (parentheses included, as
/// BRE takes them literally) itself.
fn bre_matches(re: &str, s: &str) -> bool {
    fn at(re: &[char], s: &[char]) -> bool {
        match re {
            [] => s.is_empty(),
            [c, '*', rest @ ..] => {
                let mut i = 0;
                loop {
                    if at(rest, &s[i..]) {
                        return true;
                    }
                    if i < s.len() && (*c == '.' || s[i] == *c) {
                        i += 1;
                    } else {
                        return false;
                    }
                }
            }
            [c, rest @ ..] => !s.is_empty() && (*c == '.' || s[0] == *c) && at(rest, &s[1..]),
        }
    }
    let re: Vec<char> = re.chars().collect();
    let s: Vec<char> = s.chars().collect();
    at(&re, &s)
}

#[cfg(test)]
mod tests {
    use super::{bre_matches, c_atoi, c_integer, json};

    #[test]
    fn atoi_reads_as_glibc_does_into_an_int() {
        assert_eq!(c_atoi(" 12abc"), 12);
        assert_eq!(c_atoi("-1"), -1);
        assert_eq!(c_atoi("+7"), 7);
        assert_eq!(c_atoi("x"), 0);
        assert_eq!(c_atoi("-"), 0);
        assert_eq!(c_atoi("4294967295"), -1);
        assert_eq!(c_atoi("99999999999999999999999"), -1);
        assert_eq!(c_atoi("-99999999999999999999999"), 0);
        // -LONG_MAX is no overflow: its low 32 bits are 1.
        assert_eq!(c_atoi("-9223372036854775807"), 1);
    }

    #[test]
    fn the_upstream_scripts_pattern_matches_the_three_counters_only() {
        let re = ".*replica(Count)";
        assert!(bre_matches(re, "replica*eon.replica_stub*replica(Count)"));
        assert!(bre_matches(
            re,
            "replica*eon.replica_stub*opening.replica(Count)"
        ));
        assert!(!bre_matches(re, "replica*eon.replica_stub*replicas"));
        assert!(bre_matches(".*", "anything"));
    }

    #[test]
    fn strtoll_base_zero_reads_hex_octal_and_decimal_whole() {
        assert_eq!(c_integer("0x10"), Some(16));
        assert_eq!(c_integer("010"), Some(8));
        assert_eq!(c_integer("-5"), Some(-5));
        assert_eq!(c_integer("3600000"), Some(3_600_000));
        assert_eq!(c_integer("12abc"), None);
        assert_eq!(c_integer(""), None);
    }

    #[test]
    fn master_replies_are_dump_2_with_sorted_keys() {
        assert_eq!(
            json(&[
                ("meta.lb.assign_delay_ms", "600000".into()),
                ("error", "ok".into())
            ]),
            "{\n  \"error\": \"ok\",\n  \"meta.lb.assign_delay_ms\": \"600000\"\n}"
        );
    }
}
