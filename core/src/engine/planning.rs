//! Planning: bad input refused before anything is touched, the nodes already at the
//! target, the waves, the temporary replicas and the accepted tables (also the dry run).

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::Resume;
use crate::model::Procedure;
use crate::model::{Change, NodeId, RoleKind, Topology};
use crate::plan::{self, Plan, PlannedKnob, SelectionError};
use crate::policy::Spec;
use crate::replicas::{Relief, accepted_downtime, check_accepted, place_temporary_replicas};
use crate::wave::Wave;

use super::ctx::Ctx;
use super::knobs::Guard;
use super::retry::retry;
use super::run::Report;

/// Builds the plan of `spec` from the live topology without touching anything (a dry run).
///
/// # Errors
/// Bad input (policy, selection, change) and backend errors reading the topology or knobs.
pub async fn plan<C: Cluster>(cluster: &C, spec: &Spec) -> Result<Plan, Error<C::Error>> {
    let topology = validate(cluster, spec).await?;
    let nodes = resolve(&topology, spec, &plan::retired(&topology))?;
    let guard = Guard::from_journal(
        &Resume::default(),
        cluster.knobs(spec.policy.get_procedure()),
    );
    let planned = guard.planned(cluster, &spec.policy).await?;
    let (todo, done) = split_done(cluster, spec, &nodes, &[]).await?;
    Ok(make_plan(cluster, spec, &topology, &todo, done, planned))
}

pub(super) async fn validate<C: Cluster>(
    cluster: &C,
    spec: &Spec,
) -> Result<Topology, Error<C::Error>> {
    spec.policy.validate().map_err(Error::InvalidPolicy)?;
    cluster
        .check_change(&spec.change)
        .map_err(|reason| Error::UnsupportedChange {
            kind: spec.change.kind(),
            reason,
        })?;
    let topology = retry(cluster, &spec.policy, None, Phase::Plan, || {
        cluster.topology()
    })
    .await?;
    check_accepted(&topology, &spec.policy).map_err(Error::InvalidPolicy)?;
    Ok(topology)
}

/// The selection, without the retired nodes unless it names them.
pub(super) fn resolve<E: std::error::Error>(
    topology: &Topology,
    spec: &Spec,
    retired: &[NodeId],
) -> Result<Vec<NodeId>, Error<E>> {
    plan::resolve_selection_except(topology, &spec.selection, retired).map_err(|e| match e {
        SelectionError::Empty => Error::EmptySelection,
        SelectionError::Unknown(n) => Error::UnknownNode(n),
        SelectionError::UnknownRole(r) => Error::UnknownRole(r),
    })
}

/// Splits `nodes` into those to roll and those already at the target (never for a restart).
pub(super) async fn split_done<C: Cluster>(
    cluster: &C,
    spec: &Spec,
    nodes: &[NodeId],
    keep: &[NodeId],
) -> Result<(Vec<NodeId>, Vec<NodeId>), Error<C::Error>> {
    let change = &spec.change;
    let mut todo = Vec::new();
    let mut done = Vec::new();
    for id in nodes {
        let node = cluster
            .node(id)
            .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
        let applied = !matches!(change, Change::Restart)
            && !keep.contains(id)
            && retry(cluster, &spec.policy, Some(id), Phase::Plan, || {
                node.is_applied(change)
            })
            .await?;
        if applied {
            done.push(id.clone());
        } else {
            todo.push(id.clone());
        }
    }
    Ok((todo, done))
}

pub(super) fn make_plan<C: Cluster>(
    cluster: &C,
    spec: &Spec,
    topology: &Topology,
    todo: &[NodeId],
    already_done: Vec<NodeId>,
    knobs: Vec<PlannedKnob>,
) -> Plan {
    let limit = cluster.data_down_limit(topology);
    let relief = Relief::new(&spec.policy, cluster.temporary_replicas().is_some());
    let (waves, mut blocked) = plan::build_waves_limited(
        topology,
        todo,
        &spec.policy,
        limit.as_ref().map(|l| l.0),
        &relief,
    );
    let mut temporary_replicas = Vec::new();
    if spec.policy.get_procedure() == Procedure::HighAvailability {
        let limit = spec.policy.get_temporary_replica_limit();
        for w in waves.iter().filter(|w| w.kind == RoleKind::Data) {
            match place_temporary_replicas(topology, &w.nodes, &relief, limit, &[]) {
                Ok(placed) => temporary_replicas.extend(placed),
                Err(reason) => blocked.extend(w.nodes.iter().map(|n| plan::Blocked {
                    node: n.clone(),
                    reason: reason.clone(),
                })),
            }
        }
    }
    let accepted_unavailable = accepted_downtime(topology, todo, &relief);
    let warnings = plan::warnings(topology, todo);
    let drains = crate::drains::drains(topology, &waves, spec.policy.get_procedure());
    Plan {
        cluster: cluster.name().to_string(),
        change: spec.change.clone(),
        procedure: spec.policy.get_procedure(),
        steps: if temporary_replicas.is_empty() {
            crate::steps::steps(spec.policy.get_procedure())
        } else {
            crate::steps::with_temporaries(crate::steps::steps(spec.policy.get_procedure()))
        },
        knobs,
        waves,
        blocked,
        already_done,
        warnings,
        limits: limit
            .map(|(max, reason)| format!("at most {max} data node(s) down at once: {reason}"))
            .into_iter()
            .collect(),
        drains,
        temporary_replicas,
        accepted_unavailable,
    }
}

impl<C: Cluster> Ctx<'_, C> {
    /// The plan of `todo`'s nodes not rolled yet, made again on the live topology once the
    /// nodes a resume found in progress are done (each of those waits for full health).
    ///
    /// # Errors
    /// [`Error::Unsafe`] naming the first node that still cannot be stopped safely.
    pub(super) async fn replan(
        &self,
        todo: &[NodeId],
        report: &Report,
    ) -> Result<Vec<Wave>, Error<C::Error>> {
        let left: Vec<NodeId> = todo
            .iter()
            .filter(|n| !report.rolled.contains(n))
            .cloned()
            .collect();
        let topology = self.topology(Phase::Plan).await?;
        let plan = make_plan(
            self.cluster,
            self.spec,
            &topology,
            &left,
            Vec::new(),
            Vec::new(),
        );
        if let Some(b) = plan.blocked.first() {
            return Err(Error::Unsafe {
                node: b.node.clone(),
                reason: b.reason.clone(),
            });
        }
        self.emit(Event::PlanReady {
            plan: Box::new(plan.clone()),
        });
        Ok(plan.waves)
    }
}
