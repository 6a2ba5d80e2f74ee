//! Type-erased backends, for a backend picked at run time.
//!
//! [`Cluster`], [`Node`] and [`HealthProbe`] return `impl Future`, so they cannot be used as
//! `dyn`. [`DynCluster`] is their object-safe companion, implemented for every `Cluster`, and
//! [`BoxCluster`] turns a `Box<dyn DynCluster>` back into a `Cluster` the engine can roll.
//! Every call then boxes its future; the generic path stays free of that cost.

use std::future::Future;
use std::pin::Pin;

use crate::cluster::{Cluster, ErrorClass, Node, TemporaryReplicas};
use crate::model::Procedure;
use crate::model::{ApplyRecord, Change, Health, Knob, NodeId, NodeInfo, NodeStatus, Topology};
use crate::probe::HealthProbe;
use crate::replicas::TemporaryReplica;

/// A boxed future that is `Send`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error of an erased backend: the backend's own error, boxed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DynError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl DynError {
    fn new<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self(Box::new(e))
    }
}

/// The object-safe companion of [`HealthProbe`].
pub trait DynProbe: Send + Sync {
    /// [`HealthProbe::check`], boxed.
    fn check_boxed(&self) -> BoxFuture<'_, Result<Health, DynError>>;
    /// [`HealthProbe::wake`], boxed.
    fn wake_boxed(&self) -> BoxFuture<'_, ()>;
}

impl<P: HealthProbe> DynProbe for P {
    fn check_boxed(&self) -> BoxFuture<'_, Result<Health, DynError>> {
        Box::pin(async move { self.check().await.map_err(DynError::new) })
    }

    fn wake_boxed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wake())
    }
}

/// A boxed probe; implements [`HealthProbe`].
pub struct BoxProbe<'a>(Box<dyn DynProbe + 'a>);

impl std::fmt::Debug for BoxProbe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxProbe").finish_non_exhaustive()
    }
}

impl<'a> BoxProbe<'a> {
    /// Boxes `probe`.
    pub fn new(probe: impl HealthProbe + 'a) -> Self {
        Self(Box::new(probe))
    }
}

impl HealthProbe for BoxProbe<'_> {
    type Error = DynError;

    fn check(&self) -> impl Future<Output = Result<Health, DynError>> + Send {
        self.0.check_boxed()
    }

    fn wake(&self) -> impl Future<Output = ()> + Send {
        self.0.wake_boxed()
    }
}

/// The object-safe companion of [`Node`].
pub trait DynNode: Send + Sync {
    /// [`Node::id`].
    fn id(&self) -> &NodeId;
    /// [`Node::stop`], boxed.
    fn stop_boxed(&self) -> BoxFuture<'_, Result<(), DynError>>;
    /// [`Node::start`], boxed.
    fn start_boxed(&self) -> BoxFuture<'_, Result<(), DynError>>;
    /// [`Node::status`], boxed.
    fn status_boxed(&self) -> BoxFuture<'_, Result<NodeStatus, DynError>>;
    /// [`Node::apply`], boxed.
    fn apply_boxed<'a>(
        &'a self,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<ApplyRecord, DynError>>;
    /// [`Node::revert`], boxed.
    fn revert_boxed<'a>(&'a self, record: &'a ApplyRecord) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`Node::is_applied`], boxed.
    fn is_applied_boxed<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<bool, DynError>>;
}

impl<N: Node> DynNode for N {
    fn id(&self) -> &NodeId {
        Node::id(self)
    }
    fn stop_boxed(&self) -> BoxFuture<'_, Result<(), DynError>> {
        Box::pin(async move { self.stop().await.map_err(DynError::new) })
    }
    fn start_boxed(&self) -> BoxFuture<'_, Result<(), DynError>> {
        Box::pin(async move { self.start().await.map_err(DynError::new) })
    }
    fn status_boxed(&self) -> BoxFuture<'_, Result<NodeStatus, DynError>> {
        Box::pin(async move { self.status().await.map_err(DynError::new) })
    }
    fn apply_boxed<'a>(
        &'a self,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<ApplyRecord, DynError>> {
        Box::pin(async move { self.apply(change).await.map_err(DynError::new) })
    }
    fn revert_boxed<'a>(&'a self, record: &'a ApplyRecord) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move { self.revert(record).await.map_err(DynError::new) })
    }
    fn is_applied_boxed<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<bool, DynError>> {
        Box::pin(async move { self.is_applied(change).await.map_err(DynError::new) })
    }
}

/// A boxed node; implements [`Node`].
pub struct BoxNode(Box<dyn DynNode>);

impl std::fmt::Debug for BoxNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BoxNode").field(self.0.id()).finish()
    }
}

impl Node for BoxNode {
    type Error = DynError;

    fn id(&self) -> &NodeId {
        self.0.id()
    }
    fn stop(&self) -> impl Future<Output = Result<(), DynError>> + Send {
        self.0.stop_boxed()
    }
    fn start(&self) -> impl Future<Output = Result<(), DynError>> + Send {
        self.0.start_boxed()
    }
    fn status(&self) -> impl Future<Output = Result<NodeStatus, DynError>> + Send {
        self.0.status_boxed()
    }
    async fn apply(&self, change: &Change) -> Result<ApplyRecord, DynError> {
        self.0.apply_boxed(change).await
    }
    async fn revert(&self, record: &ApplyRecord) -> Result<(), DynError> {
        self.0.revert_boxed(record).await
    }
    async fn is_applied(&self, change: &Change) -> Result<bool, DynError> {
        self.0.is_applied_boxed(change).await
    }
}

/// The object-safe companion of [`Cluster`], implemented for every `Cluster` whose node type
/// is `'static`.
pub trait DynCluster: Send + Sync {
    /// [`Cluster::name`].
    fn name(&self) -> &str;
    /// [`Cluster::topology`], boxed.
    fn topology_boxed(&self) -> BoxFuture<'_, Result<Topology, DynError>>;
    /// [`Cluster::nodes`], boxed.
    fn nodes_boxed(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, DynError>>;
    /// [`Cluster::topology_around`], boxed.
    fn topology_around_boxed<'a>(
        &'a self,
        nodes: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Topology, DynError>>;
    /// [`Cluster::down_outside`], boxed.
    fn down_outside_boxed<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Option<(NodeId, String)>, DynError>>;
    /// [`Cluster::unserving_outside`], boxed.
    fn unserving_outside_boxed<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Option<(NodeId, String)>, DynError>>;
    /// [`Cluster::node`], boxed.
    fn node_boxed(&self, id: &NodeId) -> Option<BoxNode>;
    /// [`Cluster::check_change`].
    fn check_change(&self, change: &Change) -> Result<(), crate::ChangeError>;
    /// [`Cluster::knobs`].
    fn knobs(&self, procedure: Procedure) -> Vec<Knob>;
    /// [`Cluster::read_knob`], boxed.
    fn read_knob_boxed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<String, DynError>>;
    /// [`Cluster::write_knob`], boxed.
    fn write_knob_boxed<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`Cluster::drain`], boxed.
    fn drain_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`Cluster::quiesce`], boxed.
    fn quiesce_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`Cluster::rejoin`], boxed.
    fn rejoin_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`Cluster::data_down_limit`].
    fn data_down_limit(&self, topology: &Topology) -> Option<(usize, String)>;
    /// [`Cluster::settle`].
    fn settle(&self, node: &NodeId) -> std::time::Duration;
    /// [`Cluster::heal`], boxed.
    fn heal_boxed(&self) -> BoxFuture<'_, Result<(), DynError>>;
    /// Whether [`Cluster::temporary_replicas`] is `Some`.
    fn has_temporary_replicas(&self) -> bool;
    /// [`TemporaryReplicas::add_temporary_replica`], boxed; an error when the backend has
    /// none.
    fn add_temporary_replica_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`TemporaryReplicas::remove_temporary_replica`], boxed; an error when the backend has
    /// none.
    fn remove_temporary_replica_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> BoxFuture<'a, Result<(), DynError>>;
    /// [`TemporaryReplicas::temporary_replica_ready`] (`removed` false) or
    /// [`TemporaryReplicas::temporary_replica_removed`] (`removed` true), boxed; a failed
    /// probe when the backend has none.
    fn temporary_probe_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
        removed: bool,
    ) -> BoxProbe<'a>;
    /// The probe of a step, boxed.
    fn probe_boxed<'a>(&'a self, which: Which, node: &'a NodeId) -> BoxProbe<'a>;
    /// [`Cluster::classify`] of the boxed error (fatal when it is not this backend's).
    fn classify_dyn(&self, error: &DynError) -> ErrorClass;
}

/// Which probe [`DynCluster::probe_boxed`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Which {
    /// [`Cluster::drained`].
    Drained,
    /// [`Cluster::quiesced`].
    Quiesced,
    /// [`Cluster::stopped`].
    Stopped,
    /// [`Cluster::ready`].
    Ready,
    /// [`Cluster::rejoined`].
    Rejoined,
    /// [`Cluster::fully_healthy`] (the node is ignored).
    FullyHealthy,
    /// [`Cluster::safe_to_stop`].
    SafeToStop,
}

impl<C> DynCluster for C
where
    C: Cluster,
    C::Node: 'static,
{
    fn name(&self) -> &str {
        Cluster::name(self)
    }
    fn topology_boxed(&self) -> BoxFuture<'_, Result<Topology, DynError>> {
        Box::pin(async move { self.topology().await.map_err(DynError::new) })
    }
    fn nodes_boxed(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, DynError>> {
        Box::pin(async move { self.nodes().await.map_err(DynError::new) })
    }
    fn topology_around_boxed<'a>(
        &'a self,
        nodes: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Topology, DynError>> {
        Box::pin(async move { self.topology_around(nodes).await.map_err(DynError::new) })
    }
    fn down_outside_boxed<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Option<(NodeId, String)>, DynError>> {
        Box::pin(async move { self.down_outside(exempt).await.map_err(DynError::new) })
    }
    fn unserving_outside_boxed<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> BoxFuture<'a, Result<Option<(NodeId, String)>, DynError>> {
        Box::pin(async move { self.unserving_outside(exempt).await.map_err(DynError::new) })
    }
    fn node_boxed(&self, id: &NodeId) -> Option<BoxNode> {
        self.node(id).map(|n| BoxNode(Box::new(n)))
    }
    fn check_change(&self, change: &Change) -> Result<(), crate::ChangeError> {
        Cluster::check_change(self, change)
    }
    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        Cluster::knobs(self, procedure)
    }
    fn read_knob_boxed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<String, DynError>> {
        Box::pin(async move { self.read_knob(name).await.map_err(DynError::new) })
    }
    fn write_knob_boxed<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move { self.write_knob(name, value).await.map_err(DynError::new) })
    }
    fn drain_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move { self.drain(node).await.map_err(DynError::new) })
    }
    fn quiesce_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move { self.quiesce(node).await.map_err(DynError::new) })
    }
    fn rejoin_boxed<'a>(&'a self, node: &'a NodeId) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move { self.rejoin(node).await.map_err(DynError::new) })
    }
    fn data_down_limit(&self, topology: &Topology) -> Option<(usize, String)> {
        Cluster::data_down_limit(self, topology)
    }
    fn settle(&self, node: &NodeId) -> std::time::Duration {
        Cluster::settle(self, node)
    }
    fn heal_boxed(&self) -> BoxFuture<'_, Result<(), DynError>> {
        Box::pin(async move { self.heal().await.map_err(DynError::new) })
    }
    fn has_temporary_replicas(&self) -> bool {
        self.temporary_replicas().is_some()
    }
    fn add_temporary_replica_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move {
            match self.temporary_replicas() {
                Some(t) => t
                    .add_temporary_replica(replica)
                    .await
                    .map_err(DynError::new),
                None => Err(no_temporary_replicas()),
            }
        })
    }
    fn remove_temporary_replica_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> BoxFuture<'a, Result<(), DynError>> {
        Box::pin(async move {
            match self.temporary_replicas() {
                Some(t) => t
                    .remove_temporary_replica(replica)
                    .await
                    .map_err(DynError::new),
                None => Err(no_temporary_replicas()),
            }
        })
    }
    fn temporary_probe_boxed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
        removed: bool,
    ) -> BoxProbe<'a> {
        match self.temporary_replicas() {
            Some(t) if removed => BoxProbe::new(t.temporary_replica_removed(replica)),
            Some(t) => BoxProbe::new(t.temporary_replica_ready(replica)),
            None => BoxProbe::new(crate::probe::probes::failed::<C::Error>(
                "this backend adds no temporary replicas",
            )),
        }
    }
    fn probe_boxed<'a>(&'a self, which: Which, node: &'a NodeId) -> BoxProbe<'a> {
        match which {
            Which::Drained => BoxProbe::new(self.drained(node)),
            Which::Quiesced => BoxProbe::new(self.quiesced(node)),
            Which::Stopped => BoxProbe::new(self.stopped(node)),
            Which::Ready => BoxProbe::new(self.ready(node)),
            Which::Rejoined => BoxProbe::new(self.rejoined(node)),
            Which::FullyHealthy => BoxProbe::new(self.fully_healthy()),
            Which::SafeToStop => BoxProbe::new(self.safe_to_stop(node)),
        }
    }
    fn classify_dyn(&self, error: &DynError) -> ErrorClass {
        error
            .0
            .downcast_ref::<C::Error>()
            .map_or(ErrorClass::Fatal, |e| self.classify(e))
    }
}

/// A cluster behind `dyn`: implements [`Cluster`] by boxing every call, for a backend picked
/// at run time.
///
/// # Examples
/// ```
/// use rollout_core::{Change, MemoryJournal, Run, Spec, roll, erased::BoxCluster};
/// use rollout_sim::{Flavor, SimBuilder};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let flavor = Flavor::OpenMldb; // say, from a config file
/// let cluster = BoxCluster::new(SimBuilder::new(flavor).build().unwrap());
/// let report = roll(&cluster, &Spec::new(Change::Restart), Run::new(&MemoryJournal::new()))
///     .await
///     .unwrap();
/// assert!(report.knobs_restored);
/// # }
/// ```
pub struct BoxCluster(Box<dyn DynCluster>);

impl std::fmt::Debug for BoxCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BoxCluster").field(&self.0.name()).finish()
    }
}

impl BoxCluster {
    /// Erases `cluster`.
    pub fn new<C>(cluster: C) -> Self
    where
        C: Cluster + 'static,
        C::Node: 'static,
    {
        Self(Box::new(cluster))
    }

    /// Wraps an already boxed cluster.
    pub fn from_box(cluster: Box<dyn DynCluster>) -> Self {
        Self(cluster)
    }
}

/// An empty node id, for probes that take none.
static NO_NODE: std::sync::LazyLock<NodeId> = std::sync::LazyLock::new(NodeId::empty);

impl Cluster for BoxCluster {
    type Node = BoxNode;
    type Error = DynError;

    fn name(&self) -> &str {
        self.0.name()
    }
    fn topology(&self) -> impl Future<Output = Result<Topology, DynError>> + Send {
        self.0.topology_boxed()
    }
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, DynError>> + Send {
        self.0.nodes_boxed()
    }
    fn topology_around<'a>(
        &'a self,
        nodes: &'a [NodeId],
    ) -> impl Future<Output = Result<Topology, DynError>> + Send + 'a {
        self.0.topology_around_boxed(nodes)
    }
    fn down_outside<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> impl Future<Output = Result<Option<(NodeId, String)>, DynError>> + Send + 'a {
        self.0.down_outside_boxed(exempt)
    }
    fn unserving_outside<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> impl Future<Output = Result<Option<(NodeId, String)>, DynError>> + Send + 'a {
        self.0.unserving_outside_boxed(exempt)
    }
    fn node(&self, id: &NodeId) -> Option<BoxNode> {
        self.0.node_boxed(id)
    }
    fn check_change(&self, change: &Change) -> Result<(), crate::ChangeError> {
        self.0.check_change(change)
    }
    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        self.0.knobs(procedure)
    }
    async fn read_knob(&self, name: &str) -> Result<String, DynError> {
        self.0.read_knob_boxed(name).await
    }
    async fn write_knob(&self, name: &str, value: &str) -> Result<(), DynError> {
        self.0.write_knob_boxed(name, value).await
    }
    async fn drain(&self, node: &NodeId) -> Result<(), DynError> {
        self.0.drain_boxed(node).await
    }
    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::Drained, node)
    }
    async fn quiesce(&self, node: &NodeId) -> Result<(), DynError> {
        self.0.quiesce_boxed(node).await
    }
    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::Quiesced, node)
    }
    fn stopped<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::Stopped, node)
    }
    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::Ready, node)
    }
    async fn rejoin(&self, node: &NodeId) -> Result<(), DynError> {
        self.0.rejoin_boxed(node).await
    }
    async fn heal(&self) -> Result<(), DynError> {
        self.0.heal_boxed().await
    }
    fn data_down_limit(&self, topology: &Topology) -> Option<(usize, String)> {
        self.0.data_down_limit(topology)
    }
    fn settle(&self, node: &NodeId) -> std::time::Duration {
        self.0.settle(node)
    }
    fn temporary_replicas(&self) -> Option<&impl TemporaryReplicas<Error = DynError>> {
        self.0.has_temporary_replicas().then_some(self)
    }
    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::Rejoined, node)
    }
    fn fully_healthy(&self) -> impl HealthProbe<Error = DynError> + '_ {
        self.0.probe_boxed(Which::FullyHealthy, &NO_NODE)
    }
    fn safe_to_stop<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.probe_boxed(Which::SafeToStop, node)
    }
    fn classify(&self, error: &DynError) -> ErrorClass {
        self.0.classify_dyn(error)
    }
}

/// The error of a temporary-replica call to a backend that adds none.
fn no_temporary_replicas() -> DynError {
    DynError::new(std::io::Error::other(
        "this backend adds no temporary replicas",
    ))
}

impl TemporaryReplicas for BoxCluster {
    type Error = DynError;

    async fn add_temporary_replica(&self, replica: &TemporaryReplica) -> Result<(), DynError> {
        self.0.add_temporary_replica_boxed(replica).await
    }
    fn temporary_replica_ready<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.temporary_probe_boxed(replica, false)
    }
    async fn remove_temporary_replica(&self, replica: &TemporaryReplica) -> Result<(), DynError> {
        self.0.remove_temporary_replica_boxed(replica).await
    }
    fn temporary_replica_removed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = DynError> + 'a {
        self.0.temporary_probe_boxed(replica, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The companion traits must stay dyn-compatible.
    fn _obj_safe(_: &dyn DynCluster, _: &dyn DynNode, _: &dyn DynProbe) {}
}
