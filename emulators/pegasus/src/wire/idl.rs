//! The request structs a Pegasus server reads and the response structs it writes, per
//! version, from the IDL of each tag (docs/upstream/pegasus.md §2):
//! `src/rdsn/src/common/meta_admin.thrift`, `replica_admin.thrift` @v2.4.0; `idl/meta_admin.thrift`,
//! `idl/dsn.layer2.thrift`, `idl/replica_admin.thrift`, `idl/metadata.thrift`,
//! `idl/command.thrift`, `idl/rrdb.thrift` @v2.5.0 and @master.
//!
//! A request is read the way thrift 0.9.3's generated C++ reader reads it
//! (`t_cpp_generator.cc` `generate_struct_reader`): a field whose id the version's IDL has and
//! whose wire type is the declared one is read, anything else is skipped by its wire type
//! ([`CppReader::skip`]); a list is resized to its announced size and its elements read with
//! the declared reader, whatever element type the wire names.

use super::out::Out;
use super::reader::{Abort, CppReader, ty};
use crate::version::ServerVersion;

/// A host name and port as master's `host_port` carries them.
pub(crate) type HostPort = (String, u16);

/// Reads one generated struct: `on(reader, wire type, id)` reads a field it knows (and
/// returns `true`), or returns `false` to have it skipped.
fn read_struct(
    r: &mut CppReader<'_>,
    mut on: impl FnMut(&mut CppReader<'_>, u8, i16) -> Result<bool, Abort>,
) -> Result<(), Abort> {
    r.enter()?;
    loop {
        let (t, id) = r.field_begin()?;
        if t == ty::STOP {
            break;
        }
        if !on(r, t, id)? {
            r.skip(t)?;
        }
    }
    r.leave();
    Ok(())
}

/// A list field's elements, each read with `elem` whatever the announced element type.
fn read_list<T>(
    r: &mut CppReader<'_>,
    mut elem: impl FnMut(&mut CppReader<'_>) -> Result<T, Abort>,
) -> Result<Vec<T>, Abort> {
    let (_, n) = r.list_begin()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(elem(r)?);
    }
    Ok(out)
}

/// `unmarshall_thrift_internal` (`thrift_helper.h`): the args struct's one field header, of
/// any type and id and unchecked, the request, then one more field header taken as the STOP,
/// unchecked too.
pub(crate) fn args<T>(
    body: &[u8],
    read: impl FnOnce(&mut CppReader<'_>) -> Result<T, Abort>,
) -> Result<T, Abort> {
    let mut r = CppReader::new(body);
    r.field_begin()?;
    let v = read(&mut r)?;
    r.field_begin()?;
    Ok(v)
}

/// A request with one `i32` field 1 (`configuration_list_nodes_request`,
/// `configuration_list_apps_request` on 2.4/2.5, `configuration_meta_control_request`), its
/// default when absent.
pub(crate) fn i32_request(r: &mut CppReader<'_>, default: i32) -> Result<i32, Abort> {
    let mut v = default;
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::I32) => {
                v = r.i32()?;
                true
            }
            _ => false,
        })
    })?;
    Ok(v)
}

/// `configuration_list_apps_request`: field 1 `status`; master adds 2 `app_name_pattern` and
/// 3 `match_type`, which the emulator reads and ignores (it lists every app).
pub(crate) fn list_apps_request(r: &mut CppReader<'_>, v: ServerVersion) -> Result<i32, Abort> {
    let mut status = 0;
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::I32) => {
                status = r.i32()?;
                true
            }
            (2, ty::STRING) if v.host_ports() => {
                r.string()?;
                true
            }
            (3, ty::I32) if v.host_ports() => {
                r.i32()?;
                true
            }
            _ => false,
        })
    })?;
    Ok(status)
}

/// `query_cfg_request` (`configuration_query_by_index_request` @v2.4.0).
#[derive(Debug, Default)]
pub(crate) struct QueryCfg {
    pub(crate) app_name: String,
    pub(crate) indices: Vec<i32>,
}

pub(crate) fn query_cfg(r: &mut CppReader<'_>) -> Result<QueryCfg, Abort> {
    let mut q = QueryCfg::default();
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRING) => {
                q.app_name = r.string()?;
                true
            }
            (2, ty::LIST) => {
                q.indices = read_list(r, |r| r.i32())?;
                true
            }
            _ => false,
        })
    })?;
    Ok(q)
}

/// `configuration_proposal_action`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Action {
    /// 1: the raw `rpc_address` of the server that carries it out.
    pub(crate) target: i64,
    /// 2: the raw `rpc_address` of the node it is about.
    pub(crate) node: i64,
    /// 3: `config_type` (`CT_INVALID` 0 when absent).
    pub(crate) kind: i32,
    /// 5 (master): `target` by name.
    pub(crate) hp_target: Option<HostPort>,
    /// 6 (master): `node` by name.
    pub(crate) hp_node: Option<HostPort>,
}

/// `configuration_balancer_request`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Balancer {
    /// 1: the partition (app id, partition index).
    pub(crate) gpid: (i32, i32),
    /// 2: the actions.
    pub(crate) actions: Vec<Action>,
    /// 3: `force`, false unless set.
    pub(crate) force: bool,
    /// 4: `balance_type`.
    pub(crate) balance_type: Option<i32>,
}

fn action(r: &mut CppReader<'_>, v: ServerVersion) -> Result<Action, Abort> {
    let mut a = Action::default();
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRUCT) => {
                a.target = r.rpc_address()?;
                true
            }
            (2, ty::STRUCT) => {
                a.node = r.rpc_address()?;
                true
            }
            (3, ty::I32) => {
                a.kind = r.i32()?;
                true
            }
            (5, ty::STRUCT) if v.host_ports() => {
                a.hp_target = Some(r.host_port()?);
                true
            }
            (6, ty::STRUCT) if v.host_ports() => {
                a.hp_node = Some(r.host_port()?);
                true
            }
            _ => false,
        })
    })?;
    Ok(a)
}

pub(crate) fn balancer(r: &mut CppReader<'_>, v: ServerVersion) -> Result<Balancer, Abort> {
    let mut b = Balancer::default();
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRUCT) => {
                b.gpid = r.gpid()?;
                true
            }
            (2, ty::LIST) => {
                b.actions = read_list(r, |r| action(r, v))?;
                true
            }
            (3, ty::BOOL) => {
                b.force = r.bool()?;
                true
            }
            (4, ty::I32) => {
                b.balance_type = Some(r.i32()?);
                true
            }
            _ => false,
        })
    })?;
    Ok(b)
}

/// `query_replica_info_request`: field 1 an `rpc_address`, master adds 2 `hp_node1`. The
/// handler ignores what it holds (`replica_stub::on_query_replica_info`).
pub(crate) fn query_replica_info(r: &mut CppReader<'_>, v: ServerVersion) -> Result<(), Abort> {
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRUCT) => {
                r.rpc_address()?;
                true
            }
            (2, ty::STRUCT) if v.host_ports() => {
                r.host_port()?;
                true
            }
            _ => false,
        })
    })
}

/// `command` (`idl/command.thrift`): the command and its arguments.
#[derive(Debug, Default)]
pub(crate) struct Command {
    pub(crate) cmd: String,
    pub(crate) args: Vec<String>,
}

pub(crate) fn command(r: &mut CppReader<'_>) -> Result<Command, Abort> {
    let mut c = Command::default();
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRING) => {
                c.cmd = r.string()?;
                true
            }
            (2, ty::LIST) => {
                c.args = read_list(r, |r| r.string())?;
                true
            }
            _ => false,
        })
    })?;
    Ok(c)
}

/// `update_request` (`idl/rrdb.thrift`): key and value are `dsn.blob`s, declared structs and
/// written as binaries; master's fields 4 to 7 are read and ignored.
#[derive(Debug, Default)]
pub(crate) struct Update {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) expire_ts_seconds: i32,
}

pub(crate) fn update(r: &mut CppReader<'_>) -> Result<Update, Abort> {
    let mut u = Update::default();
    read_struct(r, |r, t, id| {
        Ok(match (id, t) {
            (1, ty::STRUCT) => {
                u.key = r.binary()?.to_vec();
                true
            }
            (2, ty::STRUCT) => {
                u.value = r.binary()?.to_vec();
                true
            }
            (3, ty::I32) => {
                u.expire_ts_seconds = r.i32()?;
                true
            }
            _ => false,
        })
    })?;
    Ok(u)
}

/// A `dsn.blob` request (get, remove, ttl): the args' one field is the key, read raw.
pub(crate) fn blob(r: &mut CppReader<'_>) -> Result<Vec<u8>, Abort> {
    Ok(r.binary()?.to_vec())
}

// Responses.

/// `node_info`: status, address, and on master `hp_node`, always set.
#[derive(Clone, Debug)]
pub(crate) struct NodeOut {
    pub(crate) status: i32,
    pub(crate) addr: i64,
    pub(crate) name: Option<HostPort>,
}

/// `configuration_list_nodes_response`.
pub(crate) fn list_nodes(o: &mut Out, v: ServerVersion, err: &str, nodes: &[NodeOut]) {
    o.error_field(1, err);
    o.field(ty::LIST, 2).list(ty::STRUCT, nodes.len());
    for n in nodes {
        o.i32_field(1, n.status).address_field(2, n.addr);
        if v.host_ports() {
            o.field(ty::STRUCT, 3).host_port(n.name.as_ref());
        }
        o.stop();
    }
    o.stop();
}

/// One `app_info`.
#[derive(Clone, Debug)]
pub(crate) struct AppOut {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) max_replicas: i32,
}

/// `configuration_list_apps_response`: every `app_info` field that is not optional
/// (`idl/dsn.layer2.thrift`: 1-11 and 13; 12, 14 and master's 15 are optional and unset).
pub(crate) fn list_apps(o: &mut Out, err: &str, apps: &[AppOut]) {
    o.error_field(1, err);
    o.field(ty::LIST, 2).list(ty::STRUCT, apps.len());
    for a in apps {
        o.i32_field(1, 1) // AS_AVAILABLE
            .string_field(2, "pegasus")
            .string_field(3, &a.name)
            .i32_field(4, a.id)
            .i32_field(5, a.partitions);
        o.field(ty::MAP, 6).byte(ty::STRING).byte(ty::STRING).i32(0);
        o.bool_field(7, true)
            .i32_field(8, a.max_replicas)
            .i64_field(9, 0)
            .i64_field(10, 0)
            .i64_field(11, 0)
            .i32_field(13, a.partitions)
            .stop();
    }
    o.stop();
}

/// One `partition_configuration`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfigOut {
    pub(crate) app: i32,
    pub(crate) pidx: i32,
    pub(crate) ballot: i64,
    pub(crate) max_replicas: i32,
    pub(crate) primary: i64,
    pub(crate) secondaries: Vec<i64>,
    pub(crate) last_drops: Vec<i64>,
    pub(crate) hp_primary: Option<HostPort>,
    pub(crate) hp_secondaries: Vec<HostPort>,
    pub(crate) hp_last_drops: Vec<HostPort>,
}

fn config(o: &mut Out, v: ServerVersion, c: &ConfigOut) {
    o.gpid_field(1, c.app, c.pidx)
        .i64_field(2, c.ballot)
        .i32_field(3, c.max_replicas)
        .address_field(4, c.primary);
    for (id, list) in [(5, &c.secondaries), (6, &c.last_drops)] {
        o.field(ty::LIST, id).list(ty::STRUCT, list.len());
        for a in list {
            o.i64(*a);
        }
    }
    o.i64_field(7, 0).i32_field(8, 0);
    if v.host_ports() {
        // The state loader marks all three set, so they are written even when empty
        // (`server_state::sync_apps_from_remote_storage` @master).
        o.field(ty::STRUCT, 9).host_port(c.hp_primary.as_ref());
        for (id, list) in [(10, &c.hp_secondaries), (11, &c.hp_last_drops)] {
            o.field(ty::LIST, id).list(ty::STRUCT, list.len());
            for hp in list {
                o.host_port(Some(hp));
            }
        }
    }
    o.stop();
}

/// `query_cfg_response`.
pub(crate) fn query_cfg_response(
    o: &mut Out,
    v: ServerVersion,
    err: &str,
    app: (i32, i32),
    partitions: &[ConfigOut],
) {
    o.error_field(1, err)
        .i32_field(2, app.0)
        .i32_field(3, app.1)
        .bool_field(4, true);
    o.field(ty::LIST, 5).list(ty::STRUCT, partitions.len());
    for c in partitions {
        config(o, v, c);
    }
    o.stop();
}

/// `configuration_cluster_info_response`: keys and values side by side.
pub(crate) fn cluster_info(o: &mut Out, err: &str, pairs: &[(&str, String)]) {
    o.error_field(1, err);
    o.field(ty::LIST, 2).list(ty::STRING, pairs.len());
    for (k, _) in pairs {
        o.string(k);
    }
    o.field(ty::LIST, 3).list(ty::STRING, pairs.len());
    for (_, v) in pairs {
        o.string(v);
    }
    o.stop();
}

/// `configuration_meta_control_response`.
pub(crate) fn meta_control(o: &mut Out, err: &str, old_level: i32) {
    o.error_field(1, err).i32_field(2, old_level).stop();
}

/// A response that carries only its error (`configuration_balancer_response`).
pub(crate) fn err_only(o: &mut Out, err: &str) {
    o.error_field(1, err).stop();
}

/// One `replica_info` (`idl/metadata.thrift`).
#[derive(Clone, Debug)]
pub(crate) struct ReplicaOut {
    pub(crate) app: i32,
    pub(crate) pidx: i32,
    pub(crate) ballot: i64,
    pub(crate) status: i32,
}

/// `query_replica_info_response`.
pub(crate) fn replica_info(o: &mut Out, err: &str, replicas: &[ReplicaOut]) {
    o.error_field(1, err);
    o.field(ty::LIST, 2).list(ty::STRUCT, replicas.len());
    for r in replicas {
        o.gpid_field(1, r.app, r.pidx)
            .i64_field(2, r.ballot)
            .i32_field(3, r.status)
            .i64_field(4, 0)
            .i64_field(5, 0)
            .i64_field(6, 0)
            .string_field(7, "pegasus")
            .string_field(8, "default")
            .stop();
    }
    o.stop();
}

/// `update_response` (`idl/rrdb.thrift`).
pub(crate) fn update_response(
    o: &mut Out,
    error: i32,
    gpid: (i32, i32),
    decree: i64,
    server: &str,
) {
    o.i32_field(1, error)
        .i32_field(2, gpid.0)
        .i32_field(3, gpid.1)
        .i64_field(4, decree)
        .string_field(5, server)
        .stop();
}

/// `read_response`: field 2 is a `dsn.blob` (a struct header, then the bytes), written even
/// when empty, as the struct has no optional field.
pub(crate) fn read_response(o: &mut Out, error: i32, value: &[u8], gpid: (i32, i32), server: &str) {
    o.i32_field(1, error);
    o.field(ty::STRUCT, 2).binary(value);
    o.i32_field(3, gpid.0)
        .i32_field(4, gpid.1)
        .string_field(6, server)
        .stop();
}

/// `ttl_response`.
pub(crate) fn ttl_response(o: &mut Out, error: i32, ttl: i32, gpid: (i32, i32), server: &str) {
    o.i32_field(1, error)
        .i32_field(2, ttl)
        .i32_field(3, gpid.0)
        .i32_field(4, gpid.1)
        .string_field(6, server)
        .stop();
}

#[cfg(test)]
mod tests {
    use super::{Action, args, balancer};
    use crate::version::ServerVersion;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A move-primary of 2.5 from 10.0.0.1 to 10.0.0.2 with `hp_*` fields, as the backend
    /// sent it before it knew better (docs/upstream/pegasus.md §3.5): a 2.5 meta keeps the
    /// demote and loses the promote, and stops reading at byte 74.
    const MOVE_PRIMARY_WITH_HOST_PORTS: &str = "
        0c00010c000100000005000000020f00020c000000020c00010a00000187f100
        010c00020a00000187f10001080003000000050c00050000000831302e302e30
        2e3187f1010c00060000000831302e302e302e3187f101000c00010a00000287
        f100010c00020a00000287f10001080003000000020c00050000000831302e30
        2e302e3287f1010c00060000000831302e302e302e3287f10100020003000800
        04000000000000";

    #[test]
    fn a_2_5_meta_loses_the_promote_of_a_move_primary_with_host_ports() {
        let bytes = hex(MOVE_PRIMARY_WITH_HOST_PORTS);
        let b = args(&bytes, |r| balancer(r, ServerVersion::V2_5)).unwrap();
        assert_eq!(b.gpid, (2, 5));
        let me = (0x0a00_0001_i64 << 32) | (34801 << 16) | 1;
        assert_eq!(
            b.actions,
            vec![
                Action {
                    target: me,
                    node: me,
                    kind: 5,
                    ..Action::default()
                },
                Action::default()
            ]
        );
        assert!(!b.force);
        assert_eq!(b.balance_type, None);
    }

    #[test]
    fn master_reads_the_same_bytes_whole() {
        let bytes = hex(MOVE_PRIMARY_WITH_HOST_PORTS);
        let b = args(&bytes, |r| balancer(r, ServerVersion::Master)).unwrap();
        assert_eq!(b.actions.len(), 2);
        assert_eq!(b.actions[1].kind, 2);
        assert_eq!(b.actions[1].hp_node, Some(("10.0.0.2".to_string(), 34801)));
        assert_eq!(b.balance_type, Some(0));
    }
}
