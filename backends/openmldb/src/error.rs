//! The backend's error, each naming the server and the step, and how the engine treats it.

use rollout_core::ErrorClass;

/// What went wrong talking to OpenMLDB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenMldbError {
    /// The server could not be reached, or did not answer in time.
    #[error("{server}: {method}: {reason}")]
    Transport {
        /// `host:port`.
        server: String,
        /// The RPC.
        method: &'static str,
        /// What the HTTP client said.
        reason: String,
    },
    /// brpc refused the request (400 bad JSON or a missing required field, 401 no
    /// authorization, 404 no such method, 503 stopping, 504 timeout, ...).
    #[error("{server}: {method}: HTTP {status}: {body}")]
    Http {
        /// `host:port`.
        server: String,
        /// The RPC.
        method: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body is not the method's JSON.
    #[error("{server}: {method}: the answer is not the expected JSON ({reason}): {body:?}")]
    BadBody {
        /// `host:port`.
        server: String,
        /// The RPC.
        method: &'static str,
        /// Why it did not parse.
        reason: String,
        /// The start of the body.
        body: String,
    },
    /// The server answered with a non-zero return code (`src/base/status.h`).
    #[error("{server}: {method}: code {code}: {msg}")]
    App {
        /// `host:port`.
        server: String,
        /// The RPC.
        method: &'static str,
        /// The return code.
        code: i32,
        /// Its message.
        msg: String,
    },
    /// ZooKeeper could not be read.
    #[error("ZooKeeper {zk}: {what}: {reason}")]
    ZooKeeper {
        /// The ensemble and root.
        zk: String,
        /// What was being read.
        what: String,
        /// What the client said.
        reason: String,
    },
    /// A process handle failed (stop, start, status, apply, revert).
    #[error("node {node}: {what}: {reason}")]
    Node {
        /// The node.
        node: String,
        /// The step.
        what: String,
        /// Why.
        reason: String,
    },
    /// A leader move found no follower at the leader's offset in time, or the offsets
    /// differed after the fence (which was lifted).
    #[error("{table} partition {pid}: {reason}")]
    Move {
        /// The table.
        table: String,
        /// The partition.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// A server runs a version this backend does not speak, or names none.
    #[error("{server}: {why}")]
    Unsupported {
        /// `host:port`.
        server: String,
        /// The version it reported and what is supported.
        why: String,
    },
    /// No OpenMLDB under the root, or no nameserver leader in it.
    #[error("ZooKeeper {zk}: {reason}")]
    NotFound {
        /// The ensemble and root.
        zk: String,
        /// What is missing.
        reason: String,
    },
}

impl OpenMldbError {
    pub(crate) fn transport(at: (String, &'static str), e: &reqwest::Error) -> Self {
        // A connect that timed out is both: no byte of the request was sent.
        let reason = if e.is_connect() {
            format!("{CANNOT_CONNECT}: {e}")
        } else if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            e.to_string()
        };
        Self::Transport {
            server: at.0,
            method: at.1,
            reason,
        }
    }

    /// How the engine treats it: a standby nameserver (code 300), an unreachable server, a
    /// stopping or overloaded one (HTTP 503, 504) and a ZooKeeper hiccup are worth another try
    /// once the leader is found again; everything else ends the step.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transport { .. } | Self::ZooKeeper { .. } => ErrorClass::Transient,
            Self::Http {
                status: 503 | 504, ..
            } => ErrorClass::Transient,
            Self::App { code, .. } if *code == code::NAMESERVER_IS_NOT_LEADER => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Fatal,
        }
    }

    /// Whether the nameserver leader must be found again before the next call: it is
    /// unreachable, a standby (code 300), or stopping (HTTP 503).
    pub fn rediscover(&self) -> bool {
        matches!(
            self,
            Self::Transport { .. } | Self::Http { status: 503, .. }
        ) || matches!(self, Self::App { code, .. } if *code == code::NAMESERVER_IS_NOT_LEADER)
    }

    /// Whether a live server refused the call: a standby nameserver (code 300) or a
    /// stopping server (HTTP 503).
    pub fn answered(&self) -> bool {
        self.not_taken() && !matches!(self, Self::Transport { .. })
    }

    /// Whether the server surely did not act on the call: a standby nameserver (code 300), a
    /// stopping server (HTTP 503), or no connection made (each also [`Self::rediscover`]). A
    /// timeout or a connection lost mid-call is not: the server may have acted. Every
    /// `NameServerImpl` method this backend calls answers 300 from its `running_` check before
    /// it acts (`src/nameserver/name_server_impl.cc`, v0.8.5 and v0.9.2), and brpc answers
    /// 503 (`ELOGOFF`, `ELIMIT`) before it dispatches (`ProcessHttpRequest` in
    /// `http_rpc_protocol.cpp`, at the brpc commit v0.9.2 pins).
    pub fn not_taken(&self) -> bool {
        match self {
            Self::Transport { reason, .. } => reason.starts_with(CANNOT_CONNECT),
            Self::Http { status: 503, .. } => true,
            Self::App { code, .. } => *code == code::NAMESERVER_IS_NOT_LEADER,
            _ => false,
        }
    }
}

/// How a [`OpenMldbError::Transport`] reason begins when no connection was made, so that no
/// byte of the request reached the server.
const CANNOT_CONNECT: &str = "cannot connect";

/// Return codes the backend acts on (`src/base/status.h`, `ReturnCode`).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// The table is not on the tablet, or not known to the nameserver.
    pub const TABLE_IS_NOT_EXIST: i32 = 100;
    /// The partition's replica is the leader (ChangeRole to leader on a leader, DelReplica of it).
    pub const TABLE_IS_LEADER: i32 = 102;
    /// The replica is a follower: Put refused; GetTableFollower asked of a follower.
    pub const TABLE_IS_FOLLOWER: i32 = 103;
    /// The partition's state is not normal (loading, making a snapshot, paused): try later.
    pub const TABLE_STATUS_IS_NOT_KNORMAL: i32 = 105;
    /// The partition has no follower.
    pub const NO_FOLLOWER: i32 = 134;
    /// A standby nameserver answered: rediscover the leader.
    pub const NAMESERVER_IS_NOT_LEADER: i32 = 300;
    /// The call needs `auto_failover` off.
    pub const AUTO_FAILOVER_IS_ENABLED: i32 = 301;
    /// The op could not be created (a ChangeLeader candidate that is not an alive follower
    /// on a healthy tablet): nothing ran.
    pub const CREATE_OP_FAILED: i32 = 305;
    /// A parameter the nameserver refuses (a RecoverEndpoint concurrency above 8).
    pub const INVALID_PARAMETER: i32 = 307;
    /// ChangeLeader without a candidate while the leader is alive.
    pub const LEADER_IS_ALIVE: i32 = 309;
    /// ChangeLeader: no alive follower.
    pub const NO_ALIVE_FOLLOWER: i32 = 310;
    /// RecoverTable on a replica still alive.
    pub const PARTITION_IS_ALIVE: i32 = 311;
    /// The tablet is a follower cluster's (SetMode follower): writes refused.
    pub const IS_FOLLOWER_CLUSTER: i32 = 453;
}
