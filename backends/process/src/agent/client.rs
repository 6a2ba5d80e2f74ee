//! [`AgentNode`]: a [`Node`] whose process is driven by the agent on its host.

use std::collections::BTreeMap;

use rollout_core::{ApplyRecord, Change, ConfigEdit, Node, NodeId, NodeStatus};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::proto::{self, agent_client::AgentClient};
use crate::error::ProcessError;

/// How to reach one host's agent.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEndpoint {
    /// `http://HOST:PORT`, or `https://HOST:PORT` for an agent with TLS.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// The CA certificate (PEM) that signed the agent's certificate, for `https`.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// A node whose component the agent at [`AgentEndpoint`] drives. Every failure names the
/// node, the agent and what was asked; a refused token or an unknown component is an error
/// at the first call, with nothing done.
#[derive(Clone, Debug)]
pub struct AgentNode {
    id: NodeId,
    component: String,
    url: String,
    token: MetadataValue<tonic::metadata::Ascii>,
    endpoint: std::sync::Arc<Endpoint>,
    /// Made at the first call (a channel needs the runtime), then shared by the clones.
    channel: std::sync::Arc<std::sync::OnceLock<Channel>>,
}

impl AgentNode {
    /// The node `id`, the agent's component `component` at `endpoint`. Connects at the
    /// first call, so it may be made outside a runtime.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] for a bad URL, token or CA file.
    pub fn new(
        id: impl Into<NodeId>,
        component: impl Into<String>,
        endpoint: &AgentEndpoint,
    ) -> Result<Self, ProcessError> {
        let id = id.into();
        let bad = |reason: String| ProcessError::InvalidConfig {
            at: format!("node {id}, agent {}", endpoint.url),
            reason,
        };
        let mut ep = Endpoint::from_shared(endpoint.url.clone()).map_err(|e| bad(e.to_string()))?;
        if let Some(ca) = &endpoint.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| bad(format!("{}: {e}", ca.display())))?;
            ep = ep
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| bad(e.to_string()))?;
        }
        let token = format!("Bearer {}", endpoint.token)
            .parse()
            .map_err(|_| bad("the token is not printable ASCII".into()))?;
        Ok(Self {
            component: component.into(),
            url: endpoint.url.clone(),
            token,
            endpoint: std::sync::Arc::new(ep),
            channel: std::sync::Arc::default(),
            id,
        })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("authorization", self.token.clone());
        req
    }

    fn failed(&self, what: &str, reason: impl std::fmt::Display) -> ProcessError {
        ProcessError::Agent {
            node: self.id.clone(),
            agent: self.url.clone(),
            what: format!("{what} {}", self.component),
            reason: reason.to_string(),
            transient: false,
            refused: false,
        }
    }

    /// A call that failed with `status`: transient when the agent could not be reached or
    /// did not answer in time (the engine retries), a refusal when the agent refused the
    /// request as invalid (`INVALID_ARGUMENT`, nothing touched), else what the agent said.
    fn status_failed(&self, what: &str, status: &tonic::Status) -> ProcessError {
        let transient = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        );
        let mut e = self.failed(what, status.message());
        if let ProcessError::Agent {
            transient: t,
            refused: r,
            ..
        } = &mut e
        {
            *t = transient;
            *r = status.code() == tonic::Code::InvalidArgument;
        }
        e
    }

    fn client(&self) -> AgentClient<Channel> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        AgentClient::new(channel)
    }

    /// Reads a progress stream to its last message: its backup record, or its error.
    async fn follow(
        &self,
        what: &str,
        stream: Result<tonic::Response<tonic::Streaming<proto::Progress>>, tonic::Status>,
    ) -> Result<BTreeMap<String, String>, ProcessError> {
        let mut stream = stream
            .map_err(|s| self.status_failed(what, &s))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(p)) if p.done => {
                    return match p.error {
                        Some(e) => Err(self.failed(what, e)),
                        None => Ok(p.backup.into_iter().collect()),
                    };
                }
                Ok(Some(p)) => tracing::debug!(node = %self.id, "{}", p.message),
                Ok(None) => {
                    return Err(self.failed(
                        what,
                        "the agent closed the stream before the end; the operation may go on \
                         there: read the node's status",
                    ));
                }
                Err(s) => return Err(self.status_failed(what, &s)),
            }
        }
    }

    fn apply_request(&self, change: &Change) -> proto::ApplyRequest {
        use proto::apply_request::Change as C;
        let change = match change {
            Change::Restart => C::Restart(true),
            Change::Upgrade { version } => C::Upgrade(version.clone()),
            Change::Config { edits } => C::Config(proto::ConfigEdits {
                edits: edits
                    .iter()
                    .map(|e| match e {
                        ConfigEdit::Set { file, key, value } => proto::ConfigEdit {
                            file: file.clone(),
                            key: key.clone(),
                            value: Some(value.clone()),
                        },
                        ConfigEdit::Unset { file, key } => proto::ConfigEdit {
                            file: file.clone(),
                            key: key.clone(),
                            value: None,
                        },
                    })
                    .collect(),
            }),
        };
        proto::ApplyRequest {
            component: self.component.clone(),
            change: Some(change),
        }
    }

    fn component_request(&self) -> proto::ComponentRequest {
        proto::ComponentRequest {
            component: self.component.clone(),
        }
    }
}

impl Node for AgentNode {
    type Error = ProcessError;

    fn id(&self) -> &NodeId {
        &self.id
    }

    async fn stop(&self) -> Result<(), ProcessError> {
        let r = self
            .client()
            .stop(self.request(self.component_request()))
            .await;
        self.follow("stopping", r).await.map(drop)
    }

    async fn start(&self) -> Result<(), ProcessError> {
        let r = self
            .client()
            .start(self.request(self.component_request()))
            .await;
        self.follow("starting", r).await.map(drop)
    }

    async fn status(&self) -> Result<NodeStatus, ProcessError> {
        let s = self
            .client()
            .status(self.request(self.component_request()))
            .await
            .map_err(|s| self.status_failed("reading the status of", &s))?
            .into_inner();
        let mut status = if s.running {
            NodeStatus::running()
        } else {
            NodeStatus::stopped()
        };
        status.boot = s.boot;
        status.version = s.version;
        status.config_digest = s.config_digest;
        status.exited = s.exited;
        Ok(status)
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, ProcessError> {
        let r = self
            .client()
            .apply(self.request(self.apply_request(change)))
            .await;
        let backup = self.follow("applying a change to", r).await?;
        Ok(ApplyRecord::new(self.id.clone(), backup))
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), ProcessError> {
        let req = proto::RevertRequest {
            component: self.component.clone(),
            backup: record.backup.clone().into_iter().collect(),
        };
        let r = self.client().revert(self.request(req)).await;
        self.follow("reverting", r).await.map(drop)
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, ProcessError> {
        Ok(self
            .client()
            .is_applied(self.request(self.apply_request(change)))
            .await
            .map_err(|s| self.status_failed("asking whether a change is applied to", &s))?
            .into_inner()
            .applied)
    }
}
