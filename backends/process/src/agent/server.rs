//! The agent's gRPC service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rollout_core::{ApplyRecord, Change, ConfigEdit, Node};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

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
}

type Progress = Result<proto::Progress, Status>;

impl AgentService {
    /// The service for `config`'s components.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] for a component that is not valid.
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
        Ok(Self {
            components: Arc::new(components),
        })
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
fn spawn_op<F>(
    guard: OwnedMutexGuard<()>,
    start: String,
    op: F,
) -> Response<ReceiverStream<Progress>>
where
    F: Future<Output = Result<BTreeMap<String, String>, ProcessError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let _guard = guard;
        // A caller that went away does not stop the operation.
        let _ = tx
            .send(Ok(proto::Progress {
                message: start.clone(),
                ..Default::default()
            }))
            .await;
        let last = match op.await {
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
        let c = self.component(&req.get_ref().component)?;
        let s = c
            .node
            .status()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::StatusReply {
            running: s.running,
            boot: s.boot,
            version: s.version,
            config_digest: s.config_digest,
            exited: s.exited,
        }))
    }

    type StopStream = ReceiverStream<Progress>;

    async fn stop(
        &self,
        req: Request<proto::ComponentRequest>,
    ) -> Result<Response<Self::StopStream>, Status> {
        let name = &req.get_ref().component;
        let (node, guard) = self.exclusive(name)?;
        Ok(spawn_op(guard, format!("stopping {name}"), async move {
            node.stop().await.map(|()| BTreeMap::new())
        }))
    }

    type StartStream = ReceiverStream<Progress>;

    async fn start(
        &self,
        req: Request<proto::ComponentRequest>,
    ) -> Result<Response<Self::StartStream>, Status> {
        let name = &req.get_ref().component;
        let (node, guard) = self.exclusive(name)?;
        Ok(spawn_op(guard, format!("starting {name}"), async move {
            node.start().await.map(|()| BTreeMap::new())
        }))
    }

    type ApplyStream = ReceiverStream<Progress>;

    async fn apply(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        let change = change_of(req.get_ref())?;
        let name = &req.get_ref().component;
        let (node, guard) = self.exclusive(name)?;
        refuse_escaping_links(&node, &change)?;
        Ok(spawn_op(
            guard,
            format!("applying a {} change to {name}", change.kind()),
            async move { node.apply(&change).await.map(|r| r.backup) },
        ))
    }

    type RevertStream = ReceiverStream<Progress>;

    async fn revert(
        &self,
        req: Request<proto::RevertRequest>,
    ) -> Result<Response<Self::RevertStream>, Status> {
        let name = &req.get_ref().component;
        let (node, guard) = self.exclusive(name)?;
        let record = ApplyRecord::new(
            node.commands().id.clone(),
            req.get_ref()
                .backup
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        Ok(spawn_op(guard, format!("reverting {name}"), async move {
            node.revert(&record).await.map(|()| BTreeMap::new())
        }))
    }

    async fn is_applied(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::IsAppliedReply>, Status> {
        let change = change_of(req.get_ref())?;
        let c = self.component(&req.get_ref().component)?;
        let applied = c
            .node
            .is_applied(&change)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::IsAppliedReply { applied }))
    }
}

/// The interceptor: the call's `authorization` must be `Bearer <token>`, compared in
/// constant time.
fn authorize(token: Arc<str>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
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
            Err(Status::unauthenticated(
                "missing or wrong bearer token: nothing was done",
            ))
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
            authorize(token),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
