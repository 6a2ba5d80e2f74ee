//! What the servers' answers say: a remote command's value, the meta's `/config` flags and
//! freeze thresholds, a replica server's `/metrics`, and the ZooKeeper in `cluster_info`.

use std::net::SocketAddr;
use std::time::Duration;

/// The number in a remote command's answer: plain (`600000`, `true`), `name: value`, or a
/// JSON object with one value.
pub(crate) fn parse_answer(answer: &str) -> Option<String> {
    let t = answer.trim();
    let t = t.rsplit([':', '=']).next().unwrap_or(t);
    let v = t
        .trim()
        .trim_matches(|c| matches!(c, '{' | '}' | '"' | ' '));
    (!v.is_empty() && !v.starts_with("ERR_") && !v.contains(' ')).then(|| v.to_string())
}

/// The meta's freeze thresholds, read over HTTP from the leader
/// (`/config?name=min_live_node_count_for_unfreeze` and
/// `/config?name=node_live_percentage_threshold_for_update`, served on the RPC port; see
/// shared/reference/pegasus.md §5 and §6), with where they came from. A value that cannot be
/// read takes the code default (3, 65) and the source says so, so that the plan's limit names
/// an assumption as one.
pub(crate) async fn freeze_thresholds(
    leader: SocketAddr,
    timeout: Duration,
) -> (usize, u32, String) {
    let http = reqwest::Client::builder().timeout(timeout).build().ok();
    let read = |name: &'static str| {
        let http = http.clone();
        async move {
            let body = http?
                .get(format!("http://{leader}/config?name={name}"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            flag_value(&body)
        }
    };
    let min_live = read("min_live_node_count_for_unfreeze").await;
    let pct = read("node_live_percentage_threshold_for_update").await;
    let source = match (min_live, pct) {
        (Some(_), Some(_)) => format!("read from the leader {leader}"),
        _ => format!(
            "{leader} did not answer /config for every threshold: the code defaults are assumed \
             where it did not"
        ),
    };
    (min_live.unwrap_or(3) as usize, pct.unwrap_or(65), source)
}

/// The sum of `total_replicas`, `opening_replicas` and `closing_replicas` in a server's
/// `/metrics` answer (`entities[].metrics[]` of `{name, value}`); `None` when none is there.
pub(crate) fn open_replicas_in(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let mut found = false;
    let mut sum = 0u64;
    for e in v["entities"].as_array()? {
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
    use super::{flag_value, parse_answer, zookeeper_of};

    #[test]
    fn remote_command_answers_in_every_style_give_their_value() {
        assert_eq!(parse_answer("600000").as_deref(), Some("600000"));
        assert_eq!(parse_answer("true\n").as_deref(), Some("true"));
        assert_eq!(
            parse_answer("assign_delay_ms: 600000").as_deref(),
            Some("600000")
        );
        assert_eq!(
            parse_answer(r#"{"meta.lb.assign_delay_ms": "600000"}"#).as_deref(),
            Some("600000")
        );
        assert_eq!(parse_answer("ERR_INVALID_PARAMETERS"), None);
        assert_eq!(parse_answer("unknown command 'x'"), None);
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
}
