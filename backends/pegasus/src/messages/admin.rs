//! The meta admin structs (`idl/meta_admin.thrift`, `idl/command.thrift`): nodes, cluster
//! info, meta level, balancer proposals, remote commands.

use crate::thrift::{DecodeError, Reader, Type, Writer, expect};
use crate::types::{ErrorCode, Gpid, HostPort, RpcAddress};

use super::{Message, fields, list, write_err, write_list};

/// `node_info` (meta_admin.thrift).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// 1: `node_status`.
    pub status: i32,
    /// 2: the replica server's address.
    pub node: RpcAddress,
    /// 3: its host and port (2.6+).
    pub hp_node: Option<HostPort>,
}

impl Message for NodeInfo {
    const NAME: &'static str = "node_info";

    fn write(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.status);
        w.field(Type::Struct, 2);
        self.node.write(w);
        if let Some(hp) = &self.hp_node {
            w.field(Type::Struct, 3);
            hp.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.status = field!(r, ty, id, n, Type::I32, r.i32()?),
                2 => m.node = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                3 => m.hp_node = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A request with one i32 field 1 (`configuration_list_nodes_request` with a `node_status`
/// filter, `configuration_meta_control_request` with a `meta_function_level`,
/// `configuration_list_apps_request` with an `app_status` filter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct I32Request(pub i32);

impl Message for I32Request {
    const NAME: &'static str = "request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::I32, 1);
        w.i32(self.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(r, |r, ty, id| {
            if id == 1 {
                m.0 = field!(r, ty, id, Self::NAME, Type::I32, r.i32()?);
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(m)
    }
}

/// A response with an error code and one list of structs in field 2
/// (`configuration_list_nodes_response`, `configuration_list_apps_response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResponse<T> {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the items.
    pub infos: Vec<T>,
}

impl<T: Message> Message for ListResponse<T> {
    const NAME: &'static str = "list response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        write_list(w, 2, Type::Struct, &self.infos, |w, i| {
            i.write(w);
            w.stop();
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut err = None;
        let mut infos = Vec::new();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    infos = list(r, n, id, Type::Struct, T::read)?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(Self { err, infos })
    }
}

/// A request with no fields (`configuration_cluster_info_request`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty;

impl Message for Empty {
    const NAME: &'static str = "empty request";

    fn write(&self, _: &mut Writer) {}

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        fields(r, |_, _, _| Ok(false))?;
        Ok(Self)
    }
}

/// `configuration_cluster_info_response`: keys and values side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfoResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the keys.
    pub keys: Vec<String>,
    /// 3: the values.
    pub values: Vec<String>,
}

impl ClusterInfoResponse {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
    }
}

impl Message for ClusterInfoResponse {
    const NAME: &'static str = "configuration_cluster_info_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        write_list(w, 2, Type::String, &self.keys, |w, s| w.string(s));
        write_list(w, 3, Type::String, &self.values, |w, s| w.string(s));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 | 3 => {
                    expect(n, id, Type::List, ty)?;
                    let v = list(r, n, id, Type::String, |r| r.string())?;
                    if id == 2 {
                        m.keys = v;
                    } else {
                        m.values = v;
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A response with an error code and one i32 field 2
/// (`configuration_meta_control_response` with the old level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct I32Response {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
    /// 2: the value.
    pub value: i32,
}

impl Message for I32Response {
    const NAME: &'static str = "configuration_meta_control_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
        w.field(Type::I32, 2);
        w.i32(self.value);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.err = Some(field!(r, ty, id, n, Type::Struct, ErrorCode::read(r)?)),
                2 => m.value = field!(r, ty, id, n, Type::I32, r.i32()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// A response with only an error code (`configuration_balancer_response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrResponse {
    /// 1: the application error.
    pub err: Option<ErrorCode>,
}

impl Message for ErrResponse {
    const NAME: &'static str = "configuration_balancer_response";

    fn write(&self, w: &mut Writer) {
        write_err(w, self.err.as_ref());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        fields(r, |r, ty, id| {
            if id == 1 {
                m.err = Some(field!(
                    r,
                    ty,
                    id,
                    Self::NAME,
                    Type::Struct,
                    ErrorCode::read(r)?
                ));
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(m)
    }
}

/// `configuration_proposal_action`. The host-name fields 5 and 6 exist on master only
/// (`idl/meta_admin.thrift` @master); 2.4 and 2.5 misread them, so they are written only
/// when set, and the cluster sets them only from names the meta itself reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProposalAction {
    /// 1: the server that carries the action out (the partition's primary).
    pub target: RpcAddress,
    /// 2: the node the action is about.
    pub node: RpcAddress,
    /// 3: `config_type`.
    pub kind: i32,
    /// 5: `target` as host and port.
    pub hp_target: Option<HostPort>,
    /// 6: `node` as host and port.
    pub hp_node: Option<HostPort>,
}

impl Message for ProposalAction {
    const NAME: &'static str = "configuration_proposal_action";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.target.write(w);
        w.field(Type::Struct, 2);
        self.node.write(w);
        w.field(Type::I32, 3);
        w.i32(self.kind);
        if let Some(hp) = &self.hp_target {
            w.field(Type::Struct, 5);
            hp.write(w);
        }
        if let Some(hp) = &self.hp_node {
            w.field(Type::Struct, 6);
            hp.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.target = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                2 => m.node = field!(r, ty, id, n, Type::Struct, RpcAddress::read(r)?),
                3 => m.kind = field!(r, ty, id, n, Type::I32, r.i32()?),
                5 => m.hp_target = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                6 => m.hp_node = Some(field!(r, ty, id, n, Type::Struct, HostPort::read(r)?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `configuration_balancer_request`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalancerRequest {
    /// 1: the partition.
    pub gpid: Gpid,
    /// 2: the actions, in order.
    pub action_list: Vec<ProposalAction>,
    /// 3: force.
    pub force: Option<bool>,
    /// 4: `balancer_request_type` (move_primary 0).
    pub balance_type: Option<i32>,
}

impl Message for BalancerRequest {
    const NAME: &'static str = "configuration_balancer_request";

    fn write(&self, w: &mut Writer) {
        w.field(Type::Struct, 1);
        self.gpid.write(w);
        write_list(w, 2, Type::Struct, &self.action_list, |w, a| {
            a.write(w);
            w.stop();
        });
        if let Some(f) = self.force {
            w.field(Type::Bool, 3);
            w.bool(f);
        }
        if let Some(t) = self.balance_type {
            w.field(Type::I32, 4);
            w.i32(t);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.gpid = field!(r, ty, id, n, Type::Struct, Gpid::read(r)?),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.action_list = list(r, n, id, Type::Struct, ProposalAction::read)?;
                }
                3 => m.force = Some(field!(r, ty, id, n, Type::Bool, r.bool()?)),
                4 => m.balance_type = Some(field!(r, ty, id, n, Type::I32, r.i32()?)),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

/// `command` (command.thrift): a remote command and its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// 1: the command, such as `meta.lb.assign_delay_ms`.
    pub cmd: String,
    /// 2: its arguments.
    pub arguments: Vec<String>,
}

impl Message for Command {
    const NAME: &'static str = "command";

    fn write(&self, w: &mut Writer) {
        w.field(Type::String, 1);
        w.string(&self.cmd);
        write_list(w, 2, Type::String, &self.arguments, |w, s| w.string(s));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        let n = Self::NAME;
        fields(r, |r, ty, id| {
            match id {
                1 => m.cmd = field!(r, ty, id, n, Type::String, r.string()?),
                2 => {
                    expect(n, id, Type::List, ty)?;
                    m.arguments = list(r, n, id, Type::String, |r| r.string())?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}
