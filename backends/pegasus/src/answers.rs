//! What the servers' answers say: a remote command's reply in either style, `/config`
//! flags, a replica server's open replicas in each version's shape, and the ZooKeeper in
//! `cluster_info`.

/// What a remote command's answer says (docs/upstream/pegasus.md §4): `Ok(Some(value))` for
/// a value, `Ok(None)` for a success that carries none, `Err(why)` for a failure.
///
/// 2.4 and 2.5 answer plain text: `OK`, the bare value, or a failure that starts with `ERR`
/// (`ERR: invalid arguments`, `ERR_INVALID_PARAMETERS`) or `unknown command`
/// (`command_manager::run_command`). Master answers its int and bool commands with a JSON
/// object whose `error` is `ok` on success and whose value, when there is one, sits under the
/// command's name as a string or a number (`command_manager::set_int`, `set_bool` @master).
/// An answer in neither style is a failure that quotes it.
pub(crate) fn reply(cmd: &str, answer: &str) -> Result<Option<String>, String> {
    let t = answer.trim();
    if t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|_| format!("unreadable JSON answer {t:?}"))?;
        let error = v.get("error").and_then(serde_json::Value::as_str);
        if error != Some("ok") {
            return Err(match error {
                Some(e) => e.to_string(),
                None => format!("a JSON answer without \"error\": {t}"),
            });
        }
        return Ok(match v.get(cmd) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        });
    }
    if t == "OK" {
        return Ok(None);
    }
    if t.is_empty() || t.starts_with("ERR") || t.starts_with("unknown command") {
        return Err(if t.is_empty() {
            "an empty answer".into()
        } else {
            t.to_string()
        });
    }
    if t.contains(char::is_whitespace) {
        return Err(format!("an answer in neither reply style: {t:?}"));
    }
    Ok(Some(t.to_string()))
}

/// The start time a `server-info` answer names: after `Started at ` in the text of 2.4 and
/// 2.5 (`src/server/main.cpp` @v2.5.0), `start_time` in master's JSON
/// (`server_utils.cpp` `register_server_info_cmd` @master).
pub(crate) fn started_in_server_info(answer: &str) -> Option<String> {
    let t = answer.trim();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        return v.get("start_time")?.as_str().map(str::to_owned);
    }
    let (_, at) = t.rsplit_once("Started at ")?;
    Some(at.trim().to_string()).filter(|s| !s.is_empty())
}

/// The sum of `total_replicas`, `opening_replicas` and `closing_replicas` in a server's
/// `/metrics` answer: master's object (`entities[].metrics[]` of `{name, value}`,
/// `metric_registry::take_snapshot` @master) or a top-level array of entities
/// (`metric_registry::take_snapshot` @v2.5.0); `None` when none is there.
pub(crate) fn open_replicas_in(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let entities = match &v {
        serde_json::Value::Array(a) => a,
        other => other.get("entities")?.as_array()?,
    };
    let mut found = false;
    let mut sum = 0u64;
    for e in entities {
        for m in e["metrics"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            if matches!(
                name,
                "total_replicas" | "opening_replicas" | "closing_replicas"
            ) {
                found = true;
                sum = sum.saturating_add(m["value"].as_u64().unwrap_or(0));
            }
        }
    }
    found.then_some(sum)
}

/// The replica counters of 2.4 and 2.5 (`replica_stub::install_perf_counters`): open,
/// opening and closing replicas.
pub(crate) const REPLICA_COUNTERS: [&str; 3] = [
    "replica*eon.replica_stub*replica(Count)",
    "replica*eon.replica_stub*opening.replica(Count)",
    "replica*eon.replica_stub*closing.replica(Count)",
];

/// The sum of the three replica counters in a `perf-counters` answer (`perf_counter_info`:
/// `result`, then `counters` of `{name, type, value}`, `perf_counter_utils.h` @v2.5.0).
/// `Ok(None)` while the answer lists none of them (the server has taken no snapshot yet, as
/// before its first `perf_counter_update_interval_seconds`); `Err` for an answer that is not
/// one.
pub(crate) fn replica_counters_in(body: &str) -> Result<Option<u64>, String> {
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|_| format!("not a perf-counters answer: {body:?}"))?;
    if v["result"].as_str() != Some("OK") {
        return Err(format!("perf-counters failed: {}", v["result"]));
    }
    let mut found = 0;
    let mut sum = 0u64;
    for c in v["counters"].as_array().into_iter().flatten() {
        if REPLICA_COUNTERS.contains(&c["name"].as_str().unwrap_or_default()) {
            found += 1;
            sum = sum.saturating_add(c["value"].as_f64().unwrap_or(0.0).max(0.0) as u64);
        }
    }
    Ok((found == REPLICA_COUNTERS.len()).then_some(sum))
}

/// The value of a `/config?name=` answer: a JSON object whose `value` is a number or a
/// numeric string.
pub(crate) fn flag_value(body: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    match &v["value"] {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The value of `key` in `[section]` of a `config-dump` answer (`configuration::dump`,
/// `utils/configuration.cpp` @v2.4.0: a `[section]` line, then per key a `; description`
/// line and `key = value`), as a number.
pub(crate) fn ini_value(dump: &str, section: &str, key: &str) -> Option<u32> {
    let mut inside = false;
    for line in dump.lines().map(str::trim) {
        if line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return v.trim().parse().ok();
        }
    }
    None
}

/// `cluster_info`'s `zookeeper_hosts` and `zookeeper_root`, when usable: every host with a
/// port, and an absolute root.
pub(crate) fn zookeeper_of(hosts: Option<&str>, root: Option<&str>) -> Option<(String, String)> {
    let (hosts, root) = (hosts?.trim(), root?.trim());
    let ported = |h: &str| {
        h.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    (!hosts.is_empty() && hosts.split(',').all(ported) && root.starts_with('/'))
        .then(|| (hosts.to_string(), root.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{
        flag_value, ini_value, open_replicas_in, replica_counters_in, reply,
        started_in_server_info, zookeeper_of,
    };

    #[test]
    fn the_start_time_in_server_info_in_both_styles() {
        let text = "Pegasus Server 2.5.0 (0ca31b70) Release, Started at 2024-05-01 10:00:00";
        let json = "{\"build_type\":\"Release\",\"git_SHA\":\"db756dcd\",\"start_time\":\"2026-03-13 20:33:17\",\"version\":\"2.6.0-SNAPSHOT\"}";
        assert_eq!(
            started_in_server_info(text).as_deref(),
            Some("2024-05-01 10:00:00")
        );
        assert_eq!(
            started_in_server_info(json).as_deref(),
            Some("2026-03-13 20:33:17")
        );
        assert_eq!(started_in_server_info("I am a teapot"), None);
    }

    #[test]
    fn remote_command_answers_in_both_styles() {
        let cmd = "meta.lb.assign_delay_ms";
        assert_eq!(reply(cmd, "600000"), Ok(Some("600000".into())));
        assert_eq!(reply(cmd, "true\n"), Ok(Some("true".into())));
        assert_eq!(reply(cmd, "OK"), Ok(None));
        // Master's dump(2) of a query, a set, a DEFAULT and a failure.
        assert_eq!(
            reply(
                cmd,
                "{\n  \"error\": \"ok\",\n  \"meta.lb.assign_delay_ms\": \"600000\"\n}"
            ),
            Ok(Some("600000".into()))
        );
        assert_eq!(reply(cmd, "{\n  \"error\": \"ok\"\n}"), Ok(None));
        assert_eq!(
            reply(
                cmd,
                "{\n  \"error\": \"ok\",\n  \"meta.lb.assign_delay_ms\": 600000\n}"
            ),
            Ok(Some("600000".into()))
        );
        assert_eq!(
            reply(
                cmd,
                "{\n  \"error\": \"ERR: invalid argument 'x', the value is not acceptable\"\n}"
            ),
            Err("ERR: invalid argument 'x', the value is not acceptable".into())
        );
        for failure in [
            "ERR: invalid arguments",
            "ERR_INVALID_PARAMETERS",
            "unknown command 'meta.lb.assign_delay_ms'",
            "",
            "{\"value\": 3}",
            "600000\"\n}",
            "some words here",
        ] {
            assert!(reply(cmd, failure).is_err(), "{failure:?}");
        }
    }

    #[test]
    fn replica_counts_in_every_shape() {
        let master = r#"{"cluster":"c","role":"replica","entities":[{"type":"server","id":"server","metrics":[{"name":"closing_replicas","value":0},{"name":"opening_replicas","value":1},{"name":"total_replicas","value":12}]}]}"#;
        assert_eq!(open_replicas_in(master), Some(13));
        let array =
            r#"[{"type":"server","id":"server","metrics":[{"name":"total_replicas","value":2}]}]"#;
        assert_eq!(open_replicas_in(array), Some(2));
        assert_eq!(open_replicas_in("service not found for \"metrics\""), None);
        let counters = r#"{"result":"OK","timestamp":1714528800,"timestamp_str":"2024-05-01 10:00:00","counters":[{"name":"replica*eon.replica_stub*closing.replica(Count)","type":"NUMBER","value":0.0},{"name":"replica*eon.replica_stub*replica(Count)","type":"NUMBER","value":12.0},{"name":"replica*eon.replica_stub*opening.replica(Count)","type":"NUMBER","value":1.0}]}"#;
        assert_eq!(replica_counters_in(counters), Ok(Some(13)));
        let none_yet =
            r#"{"result":"OK","timestamp":0,"timestamp_str":"1970-01-01 00:00:00","counters":[]}"#;
        assert_eq!(replica_counters_in(none_yet), Ok(None));
        assert!(replica_counters_in("unknown command 'perf-counters'").is_err());
    }

    #[test]
    fn a_config_answer_gives_its_value_as_number_or_string() {
        assert_eq!(flag_value(r#"{"name":"x","value":"3"}"#), Some(3));
        assert_eq!(flag_value(r#"{"value":65}"#), Some(65));
        assert_eq!(flag_value(r#"{"value":"many"}"#), None);
        assert_eq!(flag_value("<html>"), None);
    }

    #[test]
    fn cluster_info_zookeeper_is_used_only_when_complete() {
        assert_eq!(
            zookeeper_of(Some("10.0.0.1:2181,10.0.0.2:2181"), Some("/pegasus/c1")),
            Some(("10.0.0.1:2181,10.0.0.2:2181".into(), "/pegasus/c1".into()))
        );
        for (hosts, root) in [
            (Some("emulated"), Some("/pegasus/emulated")),
            (Some("10.0.0.1"), Some("/pegasus")),
            (Some("10.0.0.1:2181"), Some("pegasus")),
            (Some(""), Some("/pegasus")),
            (None, Some("/pegasus")),
            (Some("10.0.0.1:2181"), None),
        ] {
            assert_eq!(zookeeper_of(hosts, root), None, "{hosts:?} {root:?}");
        }
    }

    #[test]
    fn a_config_dump_value_is_read_from_its_section_only() {
        let dump = "[apps..default]\nrun = true\n\n[meta_server]\n; grace elsewhere\nfd_grace_seconds = 99\n\n\n\
                    [replication]\n; fd_grace_seconds = 5 [core] in a description\n\
                    ; every this period(seconds) the FD will check\n\
                    fd_check_interval_seconds = 2\n\n; grace (seconds)\nfd_grace_seconds = 22\n\n";
        assert_eq!(ini_value(dump, "replication", "fd_grace_seconds"), Some(22));
        assert_eq!(
            ini_value(dump, "replication", "fd_check_interval_seconds"),
            Some(2)
        );
        assert_eq!(ini_value(dump, "replication", "fd_lease_seconds"), None);
        assert_eq!(
            ini_value("unknown command 'config-dump'", "replication", "x"),
            None
        );
    }
}
