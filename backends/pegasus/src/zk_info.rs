//! The cluster's ZooKeeper as `cluster_info` reports it.

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
    use super::zookeeper_of;

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
