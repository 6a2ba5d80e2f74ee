//! Process handles for a backend: the factory a backend is built with, and its nodes wrapped
//! so that their errors become the backend's own.

use crate::cluster::Node;
use crate::model::{ApplyRecord, Change, NodeId, NodeStatus};

/// Where a backend gets the process handle of each server it finds in its cluster: a
/// closure `Fn(&NodeId) -> Option<N>` is one.
///
/// ```
/// use rollout_core::{NodeFactory, NodeId};
/// # use rollout_core::{ApplyRecord, Change, Node, NodeStatus};
/// # #[derive(Debug)] struct Handle(NodeId);
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl Node for Handle {
/// #     type Error = Never;
/// #     fn id(&self) -> &NodeId { &self.0 }
/// #     async fn stop(&self) -> Result<(), Never> { Ok(()) }
/// #     async fn start(&self) -> Result<(), Never> { Ok(()) }
/// #     async fn status(&self) -> Result<NodeStatus, Never> { Ok(NodeStatus::running()) }
/// #     async fn apply(&self, _: &Change) -> Result<ApplyRecord, Never> { Ok(ApplyRecord::new(self.0.clone(), Default::default())) }
/// #     async fn revert(&self, _: &ApplyRecord) -> Result<(), Never> { Ok(()) }
/// #     async fn is_applied(&self, _: &Change) -> Result<bool, Never> { Ok(false) }
/// # }
/// let factory = |id: &NodeId| id.as_str().starts_with("10.").then(|| Handle(id.clone()));
/// assert!(factory.node(&NodeId::new("10.0.0.7:10921")).is_some());
/// assert!(factory.node(&NodeId::new("192.168.0.1:10921")).is_none());
/// ```
pub trait NodeFactory: Send + Sync {
    /// The handle.
    type Node: Node;
    /// The handle of the server at `id` (`host:port`), if the factory knows it.
    fn node(&self, id: &NodeId) -> Option<Self::Node>;
}

impl<N: Node, F: Fn(&NodeId) -> Option<N> + Send + Sync> NodeFactory for F {
    type Node = N;
    fn node(&self, id: &NodeId) -> Option<N> {
        self(id)
    }
}

/// What [`MappedNode`] gives its backend to build an error from: the node, the operation
/// (`stop`, `start`, `status`, `apply`, `revert`, `is_applied`) and the handle's error.
pub type NodeErrorOf<E> = fn(&NodeId, &'static str, Box<dyn std::error::Error + Send + Sync>) -> E;

/// A factory's node whose errors become the backend's error `E` (by the backend's
/// [`NodeErrorOf`] function), so that a backend's `Cluster::Node` has its `Cluster::Error`.
pub struct MappedNode<N, E> {
    inner: N,
    error: NodeErrorOf<E>,
}

impl<N, E> MappedNode<N, E> {
    /// `inner`, its errors turned into `E` by `error`.
    pub fn new(inner: N, error: NodeErrorOf<E>) -> Self {
        Self { inner, error }
    }

    /// The wrapped handle.
    pub fn inner(&self) -> &N {
        &self.inner
    }
}

impl<N: std::fmt::Debug, E> std::fmt::Debug for MappedNode<N, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MappedNode").field(&self.inner).finish()
    }
}

impl<N: Node, E: std::error::Error + Send + Sync + 'static> MappedNode<N, E> {
    fn map<T>(&self, what: &'static str, r: Result<T, N::Error>) -> Result<T, E> {
        r.map_err(|e| (self.error)(self.inner.id(), what, Box::new(e)))
    }
}

impl<N: Node, E: std::error::Error + Send + Sync + 'static> Node for MappedNode<N, E> {
    type Error = E;

    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    async fn stop(&self) -> Result<(), E> {
        self.map("stop", self.inner.stop().await)
    }
    async fn start(&self) -> Result<(), E> {
        self.map("start", self.inner.start().await)
    }
    async fn status(&self) -> Result<NodeStatus, E> {
        self.map("status", self.inner.status().await)
    }
    async fn apply(&self, change: &Change) -> Result<ApplyRecord, E> {
        self.map("apply", self.inner.apply(change).await)
    }
    async fn revert(&self, record: &ApplyRecord) -> Result<(), E> {
        self.map("revert", self.inner.revert(record).await)
    }
    async fn is_applied(&self, change: &Change) -> Result<bool, E> {
        self.map("is_applied", self.inner.is_applied(change).await)
    }
}
