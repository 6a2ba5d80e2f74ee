//! The agent's gRPC service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rollout_core::{ApplyRecord, Change, ConfigEdit, Node};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::audit::Audit;
use super::config::AgentConfig;
use super::proto::{self, agent_server};
use crate::CommandNode;
use crate::error::ProcessError;

/// One component: its node and the lock that makes operations on it exclusive.
#[derive(Debug)]
struct Component {
    node: CommandNode,
    busy: Arc<Mutex<()>>,
}

/// The service: the components of [`AgentConfig`], by name. Authentication is an
/// interceptor ([`serve_on`] installs it).
#[derive(Debug, Clone)]
pub struct AgentService {
    components: Arc<BTreeMap<String, Component>>,
    audit: Audit,
}

type Progress = Result<proto::Progress, Status>;

impl AgentService {
    /// The service for `config`'s components.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] for a component that is not valid, or an
    /// `audit_log` that cannot be opened for appending.
    pub fn new(config: &AgentConfig) -> Result<Self, ProcessError> {
        let mut components = BTreeMap::new();
        for (name, commands) in &config.components {
            let node = CommandNode::new(commands.clone())?;
            components.insert(
                name.clone(),
                Component {
                    node,
                    busy: Arc::new(Mutex::new(())),
                },
            );
        }
        let audit =
            Audit::open(config.audit_log.as_deref()).map_err(|e| ProcessError::InvalidConfig {
                at: format!(
                    "audit_log {}",
                    config
                        .audit_log
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                ),
                reason: e.to_string(),
            })?;
        Ok(Self {
            components: Arc::new(components),
            audit,
        })
    }

    fn asked(&self, caller: Caller, component: &str, action: &str) -> Asked {
        Asked {
            audit: self.audit.clone(),
            caller,
            component: component.to_string(),
            action: action.to_string(),
        }
    }

    /// Records a call refused before it ran, and returns the refusal.
    fn refused<T>(
        &self,
        caller: Caller,
        component: &str,
        action: &str,
        s: Status,
    ) -> Result<T, Status> {
        self.audit.record(
            caller,
            component,
            action,
            &format!("refused: {}", s.message()),
        );
        Err(s)
    }

    /// Records `result` of a call that answered at once.
    fn answered<T>(
        &self,
        caller: Caller,
        component: &str,
        action: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        match &result {
            Ok(_) => self.audit.record(caller, component, action, "ok"),
            Err(s) => self.audit.record(
                caller,
                component,
                action,
                &format!("refused: {}", s.message()),
            ),
        }
        result
    }

    fn component(&self, name: &str) -> Result<&Component, Status> {
        self.components.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.components.keys().map(String::as_str).collect();
            Status::not_found(format!(
                "this agent has no component {name:?} (it has: {})",
                known.join(", ")
            ))
        })
    }

    fn exclusive(&self, name: &str) -> Result<(CommandNode, OwnedMutexGuard<()>), Status> {
        let c = self.component(name)?;
        let guard = c.busy.clone().try_lock_owned().map_err(|_| {
            Status::failed_precondition(format!(
                "another operation on component {name} is running on this agent; wait for it \
                 to end"
            ))
        })?;
        Ok((c.node.clone(), guard))
    }
}

/// Runs `op` on a task of its own that holds the component's lock until it ends, whether
/// or not the caller still listens, and streams its progress.
/// The caller's address, as the connection shows it.
type Caller = Option<std::net::SocketAddr>;

/// What an operation's audit lines say: who asked, for which component, what.
struct Asked {
    audit: Audit,
    caller: Caller,
    component: String,
    action: String,
}

fn spawn_op<F>(
    guard: OwnedMutexGuard<()>,
    start: String,
    asked: Asked,
    op: F,
) -> Response<ReceiverStream<Progress>>
where
    F: Future<Output = Result<BTreeMap<String, String>, ProcessError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    asked
        .audit
        .record(asked.caller, &asked.component, &asked.action, "started");
    tokio::spawn(async move {
        let _guard = guard;
        // A caller that went away does not stop the operation.
        let _ = tx
            .send(Ok(proto::Progress {
                message: start.clone(),
                ..Default::default()
            }))
            .await;
        let result = op.await;
        let outcome = match &result {
            Ok(_) => "done".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        asked
            .audit
            .record(asked.caller, &asked.component, &asked.action, &outcome);
        let last = match result {
            Ok(backup) => proto::Progress {
                message: format!("{start}: done"),
                done: true,
                error: None,
                backup: backup.into_iter().collect(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "{start} failed");
                proto::Progress {
                    message: format!("{start}: failed"),
                    done: true,
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        let _ = tx.send(Ok(last)).await;
    });
    Response::new(ReceiverStream::new(rx))
}

/// Refuses an edit of a file whose real path (symbolic links followed) leaves the deploy
/// dir: the node's own check sees only the path as written.
fn refuse_escaping_links(node: &CommandNode, change: &Change) -> Result<(), Status> {
    let Change::Config { edits } = change else {
        return Ok(());
    };
    let dir = &node.commands().deploy_dir;
    let real_dir = std::fs::canonicalize(dir)
        .map_err(|e| Status::failed_precondition(format!("{}: {e}", dir.display())))?;
    for e in edits {
        let file = match e {
            ConfigEdit::Set { file, .. } | ConfigEdit::Unset { file, .. } => file,
        };
        let path = dir.join(Path::new(file));
        if let Ok(real) = std::fs::canonicalize(&path)
            && !real.starts_with(&real_dir)
        {
            return Err(Status::permission_denied(format!(
                "{file} leads to {} outside the deploy dir {}: refused, nothing changed",
                real.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

fn change_of(req: &proto::ApplyRequest) -> Result<Change, Status> {
    use proto::apply_request::Change as C;
    Ok(match &req.change {
        Some(C::Restart(_)) => Change::Restart,
        Some(C::Upgrade(version)) => Change::Upgrade {
            version: version.clone(),
        },
        Some(C::Config(c)) => Change::Config {
            edits: c
                .edits
                .iter()
                .map(|e| match &e.value {
                    Some(value) => ConfigEdit::Set {
                        file: e.file.clone(),
                        key: e.key.clone(),
                        value: value.clone(),
                    },
                    None => ConfigEdit::Unset {
                        file: e.file.clone(),
                        key: e.key.clone(),
                    },
                })
                .collect(),
        },
        None => return Err(Status::invalid_argument("an apply without a change")),
    })
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn status(
        &self,
        req: Request<proto::ComponentRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let result = async {
            let c = self.component(name)?;
            let s = c.node.status().await.map_err(node_status)?;
            Ok(Response::new(proto::StatusReply {
                running: s.running,
                boot: s.boot,
                version: s.version,
                config_digest: s.config_digest,
                exited: s.exited,
            }))
        }
        .await;
        self.answered(caller, name, "status", result)
    }

    type StopStream = ReceiverStream<Progress>;

    async fn stop(
        &self,
        req: Request<proto::ComponentRequest>,
    ) -> Result<Response<Self::StopStream>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let (node, guard) = match self.exclusive(name) {
            Ok(x) => x,
            Err(s) => return self.refused(caller, name, "stop", s),
        };
        let asked = self.asked(caller, name, "stop");
        Ok(spawn_op(
            guard,
            format!("stopping {name}"),
            asked,
            async move { node.stop().await.map(|()| BTreeMap::new()) },
        ))
    }

    type StartStream = ReceiverStream<Progress>;

    async fn start(
        &self,
        req: Request<proto::ComponentRequest>,
    ) -> Result<Response<Self::StartStream>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let (node, guard) = match self.exclusive(name) {
            Ok(x) => x,
            Err(s) => return self.refused(caller, name, "start", s),
        };
        let asked = self.asked(caller, name, "start");
        Ok(spawn_op(
            guard,
            format!("starting {name}"),
            asked,
            async move { node.start().await.map(|()| BTreeMap::new()) },
        ))
    }

    type ApplyStream = ReceiverStream<Progress>;

    async fn apply(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let change = match change_of(req.get_ref()) {
            Ok(c) => c,
            Err(s) => return self.refused(caller, name, "apply", s),
        };
        let action = format!("apply {}", change.kind());
        let (node, guard) = match self.exclusive(name) {
            Ok(x) => x,
            Err(s) => return self.refused(caller, name, &action, s),
        };
        if let Err(s) = refuse_escaping_links(&node, &change) {
            return self.refused(caller, name, &action, s);
        }
        let asked = self.asked(caller, name, &action);
        Ok(spawn_op(
            guard,
            format!("applying a {} change to {name}", change.kind()),
            asked,
            async move { node.apply(&change).await.map(|r| r.backup) },
        ))
    }

    type RevertStream = ReceiverStream<Progress>;

    async fn revert(
        &self,
        req: Request<proto::RevertRequest>,
    ) -> Result<Response<Self::RevertStream>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let (node, guard) = match self.exclusive(name) {
            Ok(x) => x,
            Err(s) => return self.refused(caller, name, "revert", s),
        };
        let asked = self.asked(caller, name, "revert");
        let record = ApplyRecord::new(
            node.commands().id.clone(),
            req.get_ref()
                .backup
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        Ok(spawn_op(
            guard,
            format!("reverting {name}"),
            asked,
            async move { node.revert(&record).await.map(|()| BTreeMap::new()) },
        ))
    }

    async fn is_applied(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::IsAppliedReply>, Status> {
        let caller = req.remote_addr();
        let name = &req.get_ref().component;
        let result = async {
            let change = change_of(req.get_ref())?;
            let c = self.component(name)?;
            let applied = c.node.is_applied(&change).await.map_err(node_status)?;
            Ok(Response::new(proto::IsAppliedReply { applied }))
        }
        .await;
        self.answered(caller, name, "is_applied", result)
    }
}

/// The interceptor: the call's `authorization` must be `Bearer <token>`, compared in
/// constant time.
fn authorize(
    token: Arc<str>,
    audit: Audit,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(req)
        } else {
            let s = Status::unauthenticated("missing or wrong bearer token: nothing was done");
            audit.record(
                req.remote_addr(),
                "-",
                "call",
                &format!("refused: {}", s.message()),
            );
            Err(s)
        }
    }
}

/// Serves `config` on its listen address until `shutdown` completes.
///
/// # Errors
/// The config's token or TLS files cannot be read, or the address cannot be bound.
pub async fn serve(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve_on(config, listener, shutdown).await
}

/// Serves `config` on `listener` (for tests: a listener bound to port 0) until `shutdown`
/// completes.
///
/// # Errors
/// As [`serve`].
pub async fn serve_on(
    config: AgentConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let token: Arc<str> = config.token()?.into();
    let service = AgentService::new(&config)?;
    let audit = service.audit.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let cert = std::fs::read(&tls.cert)?;
        let key = std::fs::read(&tls.key)?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    builder
        .add_service(agent_server::AgentServer::with_interceptor(
            service,
            authorize(token, audit),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// A node operation's error as the agent answers it: a refusal before anything was touched
/// as `INVALID_ARGUMENT` (the caller reports bad input), anything else as `INTERNAL`.
fn node_status(e: ProcessError) -> Status {
    if e.is_refusal() {
        Status::invalid_argument(e.to_string())
    } else {
        Status::internal(e.to_string())
    }
}
