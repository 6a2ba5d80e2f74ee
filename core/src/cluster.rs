//! The two traits a backend implements: [`Cluster`] (the control plane) and [`Node`] (a process).

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::model::{ApplyRecord, Change, Knob, NodeId, NodeInfo, NodeStatus, Procedure, Topology};
use crate::probe::HealthProbe;
use crate::replicas::TemporaryReplica;

/// How the engine treats a backend error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// A passing fault (timeout, connection reset, not the leader): retried with backoff.
    Transient,
    /// The cluster refuses for now (busy, frozen, no leader yet): treated as "not yet" by the
    /// wait that asked; a step call that gets it is retried with backoff for as long as the
    /// gate deadline.
    NotSafeYet,
    /// Retrying cannot help: the rollout stops, restoring its knobs.
    Fatal,
}

/// A cluster's control plane: topology, knobs and the per-node control steps.
///
/// Every step is idempotent and comes with a probe that says when it has taken effect.
/// The engine never assumes a step worked: it waits for the probe.
pub trait Cluster: Send + Sync {
    /// The processes of this cluster.
    type Node: Node<Error = Self::Error>;
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A stable identity of the cluster (its name, meta list or ZooKeeper root), written to the
    /// journal so that a journal is never resumed against another cluster.
    fn name(&self) -> &str;

    /// Reads the live topology.
    fn topology(&self) -> impl Future<Output = Result<Topology, Self::Error>> + Send;

    /// Reads the live nodes only: what [`topology`](Cluster::topology) says of them, without
    /// the partitions. The engine calls it often (it watches the nodes outside a wave at every
    /// check of a wait), so a backend whose topology is expensive to read (many partitions)
    /// should answer it from a cheaper call. The default reads the whole topology.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, Self::Error>> + Send {
        async { self.topology().await.map(|t| t.nodes) }
    }

    /// The first data node outside `exempt` that the control plane does not see alive, with
    /// why; `None` when every one is. The engine's watch on the nodes outside a wave asks it
    /// at every check of a wait (see [`outside_node_failure`](crate::plan::outside_node_failure)).
    /// The default reads [`nodes`](Cluster::nodes); a backend with many nodes may answer from
    /// less.
    ///
    /// # Errors
    /// The backend's error, as for [`nodes`](Cluster::nodes).
    fn down_outside<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> impl Future<Output = Result<Option<(NodeId, String)>, Self::Error>> + Send + 'a {
        async move {
            Ok(crate::plan::outside_node_failure(
                &self.nodes().await?,
                exempt,
            ))
        }
    }

    /// The first replica on a node outside `exempt` that is a primary or secondary of its
    /// partition and does not serve, with why; `None` when every one serves. The engine's
    /// watch on the nodes outside a wave asks it every 30 s of a wait, before the wave's stop
    /// (see [`outside_failure`](crate::plan::outside_failure), whose replica part this is).
    /// The default reads the whole topology; a backend that can tell from less (counts it
    /// keeps, as the simulator does) should answer from that, since a roll's length grows
    /// with the partitions too.
    ///
    /// # Errors
    /// The backend's error, as for [`topology`](Cluster::topology).
    fn unserving_outside<'a>(
        &'a self,
        exempt: &'a [NodeId],
    ) -> impl Future<Output = Result<Option<(NodeId, String)>, Self::Error>> + Send + 'a {
        async move {
            let t = self.topology().await?;
            Ok(crate::plan::outside_failure(&t, exempt)
                .filter(|_| crate::plan::outside_node_failure(&t.nodes, exempt).is_none()))
        }
    }

    /// The topology around `nodes`: every partition with a replica on one of them, as
    /// [`topology`](Cluster::topology) shows it, and at least their [`NodeInfo`]s; other
    /// partitions and nodes may be left out. The engine reads it for a wave's own checks
    /// (placement before the drain and right before the stop, the roles it journals), once
    /// per wave or per poll of its gate, so that a roll of many small waves does not read
    /// the whole cluster at each. The default reads the whole topology; a backend that can
    /// find a node's partitions from less should answer from that.
    ///
    /// # Errors
    /// The backend's error, as for [`topology`](Cluster::topology).
    fn topology_around<'a>(
        &'a self,
        nodes: &'a [NodeId],
    ) -> impl Future<Output = Result<Topology, Self::Error>> + Send + 'a {
        let _ = nodes;
        self.topology()
    }

    /// A handle on the node's process, or `None` when the cluster has no such node.
    fn node(&self, id: &NodeId) -> Option<Self::Node>;

    /// Checks that this backend can apply `change`, before anything is touched. The default
    /// checks only that it is well formed ([`Change::validate`]).
    ///
    /// # Errors
    /// [`ChangeError`]: malformed, or refused by this backend (an unknown config file as
    /// [`ChangeError::Edit`], an upgrade that is no upstream path as [`ChangeError::Version`],
    /// a kind of change it does not roll as [`ChangeError::Unsupported`]).
    ///
    /// [`ChangeError`]: crate::ChangeError
    /// [`ChangeError::Edit`]: crate::ChangeError::Edit
    /// [`ChangeError::Version`]: crate::ChangeError::Version
    /// [`ChangeError::Unsupported`]: crate::ChangeError::Unsupported
    fn check_change(&self, change: &Change) -> Result<(), crate::ChangeError> {
        change.validate()
    }

    /// The knobs this procedure needs, with their values while it runs.
    fn knobs(&self, procedure: Procedure) -> Vec<Knob>;

    /// Reads a knob's current value.
    fn read_knob(&self, name: &str) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Writes a knob. The engine reads it back to verify.
    fn write_knob(
        &self,
        name: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Moves leadership and primaries away from `node` and demotes what must be demoted.
    ///
    /// Runs under the high-availability procedure for data nodes (after the wave's knobs are
    /// set) and for coordinators, where it is a leader step-down if the backend has one (an
    /// implementation with none returns `Ok` and its [`drained`](Cluster::drained) holds).
    /// Never for stateless nodes, nor under the simple procedure.
    fn drain(&self, node: &NodeId) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Holds once `node` serves nothing that its stop would interrupt. Asked after every
    /// [`drain`](Cluster::drain).
    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// Holds once the control plane has seen the stopped `node` go (its session expired, it is
    /// marked offline), so that a start cannot race the old registration.
    /// The default holds at once.
    fn stopped<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        let _ = node;
        crate::probe::probes::always()
    }

    /// Flushes or snapshots `node` so that its restart replays little. Runs for data nodes
    /// under the high-availability procedure, after the drain.
    fn quiesce(&self, node: &NodeId) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Holds once the quiesce has taken effect.
    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// Holds once a restarted `node` is attached to the control plane again. Asked for every
    /// node of every kind, under both procedures, `and`-ed with the engine's own check that
    /// a new incarnation runs.
    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// How long after `node`'s restart the engine waits before it goes on, for what the
    /// control plane cannot show: Pegasus's rolling-update doc restarts a meta server, then
    /// waits "more than 30 seconds" so that the replica servers' beacons continue
    /// (docs/procedures.md). Counted from the moment the wave's starts returned (from its
    /// readiness for a node a resumed run found already started), ending no sooner than the
    /// node is ready; once per wave (its longest), on the clock the engine runs on, and
    /// watched like any other wait. When only stateless waves are left (Pegasus's collector
    /// after the metas), they roll during it; after a coordinator wave they also roll
    /// during that wave's wait for [`Cluster::fully_healthy`], with no health check at their
    /// gates, and the roll's end waits for it once the settle has run out. The default is
    /// zero.
    fn settle(&self, node: &NodeId) -> std::time::Duration {
        let _ = node;
        std::time::Duration::ZERO
    }

    /// Gives `node` its replicas (and, where the backend wants it, its leaderships) back.
    /// Also the undo of a drain on a node that was never stopped (a skipped or failed drain, a
    /// failure outside the wave ridden out before the stop).
    /// Runs for every node under the high-availability procedure, once it is ready, and again
    /// (so it must be idempotent) when the node restarts on its own during its rejoin or when a
    /// failure outside the wave made its recovery fail.
    fn rejoin(&self, node: &NodeId) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Holds once the rejoin has taken effect.
    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// Holds when every node is alive, a coordinator leader answers and every partition is
    /// fully replicated.
    fn fully_healthy(&self) -> impl HealthProbe<Error = Self::Error> + '_;

    /// Holds when `node` may be stopped without losing availability, by the backend's rules
    /// (on top of the engine's own placement check).
    fn safe_to_stop<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// Repairs what the rollout's knobs kept the cluster from repairing by itself, once the
    /// engine has released them (when it rides out a failure outside the wave, on a pause, and
    /// after the knobs are restored at the end of a rollout and in `abort`), and what a node
    /// of the wave left half-done when it restarted on its own during its rejoin (then with
    /// the knobs still held): for example OpenMLDB recovers the replicas of a tablet that
    /// registered again while auto_failover was off, which turning it back on does not do,
    /// or a leader displaced by a move back whose recovery the crash cut off. The default
    /// does nothing.
    fn heal(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// The most data nodes the cluster tolerates down at once by its own rules, whatever the
    /// placement allows, with the reason the plan shows (a Pegasus meta freezes below
    /// `min_live_node_count_for_unfreeze` or `node_live_percentage_threshold_for_update`
    /// alive replica servers). The planner never puts more data nodes in one wave.
    /// The default sets no limit.
    fn data_down_limit(&self, topology: &Topology) -> Option<(usize, String)> {
        let _ = topology;
        None
    }

    /// The backend's temporary replicas, when it can add them: then a single-replica
    /// partition keeps serving while its node restarts (the engine adds a replica elsewhere
    /// before the drain, see [`TemporaryReplica`]). The default is `None`: such partitions
    /// block their node unless the operator accepts their table's downtime. A backend that
    /// can implements [`TemporaryReplicas`] (on itself or on a part of it) and returns
    /// `Some`.
    fn temporary_replicas(&self) -> Option<&impl TemporaryReplicas<Error = Self::Error>> {
        None::<&NoTemporaryReplicas<Self::Error>>
    }

    /// Says how the engine should treat `error`. The default treats every error as fatal.
    fn classify(&self, error: &Self::Error) -> ErrorClass {
        let _ = error;
        ErrorClass::Fatal
    }
}

/// One server process: stop it, start it, change what it runs.
pub trait Node: Send + Sync {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The node's address.
    fn id(&self) -> &NodeId;

    /// Asks the process to stop gracefully. Returns once the request is accepted;
    /// the engine waits for [`status`](Node::status) to say it stopped.
    fn stop(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Starts the process. Returns once it is launched; the engine waits for readiness.
    fn start(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reports the process state.
    fn status(&self) -> impl Future<Output = Result<NodeStatus, Self::Error>> + Send;

    /// Applies `change` (installs a version, edits config files), backing up what it replaces.
    /// Called while the process is stopped.
    ///
    /// The engine journals the returned record after this returns, so after a crash it may
    /// call `apply` again for the same change: an implementation must then keep the backup
    /// of the original (not back up its own earlier result).
    fn apply(
        &self,
        change: &Change,
    ) -> impl Future<Output = Result<ApplyRecord, Self::Error>> + Send;

    /// Puts back what [`apply`](Node::apply) replaced.
    fn revert(&self, record: &ApplyRecord) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether the running process already has `change` applied (the version or config digest
    /// matches). The engine asks it when planning (a node already at the target is left out)
    /// and after every restart for a change other than a restart: `false` there fails the
    /// rollout, so a backend that cannot tell should refuse the change in
    /// [`Cluster::check_change`]. For [`Change::Restart`] this is `false`: the engine recognises a done restart
    /// by the node's boot id.
    fn is_applied(&self, change: &Change)
    -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// The optional capability of a backend that can copy a partition to another node (OpenMLDB
/// AddReplicaNS), handed out by [`Cluster::temporary_replicas`]. The engine journals each
/// replica before it adds one, waits for it to be ready before the drain, and removes it once
/// the node it stands in for serves again.
pub trait TemporaryReplicas: Send + Sync {
    /// The backend's error (its [`Cluster::Error`]).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Adds `replica`: a follower of `replica.partition` on `replica.to` (OpenMLDB
    /// AddReplicaNS, which copies a snapshot and then streams the binlog). Idempotent: a
    /// replica already there is left as it is.
    fn add_temporary_replica(
        &self,
        replica: &TemporaryReplica,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Holds once `replica` is alive and caught up with its leader, so that the drain may
    /// move the leadership to it.
    fn temporary_replica_ready<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = Self::Error> + 'a;

    /// Removes `replica` once `replica.from` serves the partition again: first the
    /// leadership goes back to a caught-up replica other than `replica.to` (OpenMLDB
    /// ChangeLeader with that candidate), then the replica is deleted (DelReplicaNS).
    /// Idempotent. The engine calls it only when the partition's replica on `replica.from` is
    /// alive, never when the temporary one is its last copy.
    fn remove_temporary_replica(
        &self,
        replica: &TemporaryReplica,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Holds once `replica` is gone and its partition has an alive leader again.
    fn temporary_replica_removed<'a>(
        &'a self,
        replica: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = Self::Error> + 'a;
}

/// What [`Cluster::temporary_replicas`] names by default, and never hands out: it cannot be
/// built.
#[derive(Debug)]
pub(crate) struct NoTemporaryReplicas<E> {
    never: std::convert::Infallible,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<E: std::error::Error + Send + Sync + 'static> TemporaryReplicas for NoTemporaryReplicas<E> {
    type Error = E;

    async fn add_temporary_replica(&self, _: &TemporaryReplica) -> Result<(), E> {
        match self.never {}
    }

    fn temporary_replica_ready<'a>(
        &'a self,
        _: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = E> + 'a {
        let _ = self.error;
        crate::probe::probes::always()
    }

    async fn remove_temporary_replica(&self, _: &TemporaryReplica) -> Result<(), E> {
        match self.never {}
    }

    fn temporary_replica_removed<'a>(
        &'a self,
        _: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = E> + 'a {
        crate::probe::probes::always()
    }
}
