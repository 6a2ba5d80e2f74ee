//! Wraps any cluster and fails one chosen call with a fatal error, so that the same engine
//! tests run against the in-test cluster and the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rollout_core::{
    ApplyRecord, Change, Cluster, ErrorClass, Health, HealthProbe, Knob, Node, NodeId, NodeStatus,
    Procedure, Topology,
};

/// The call to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    WriteKnob,
    Drain,
    Quiesce,
    Stop,
    Apply,
    Start,
    Rejoin,
}

pub const EVERY: [At; 7] = [
    At::WriteKnob,
    At::Drain,
    At::Quiesce,
    At::Stop,
    At::Apply,
    At::Start,
    At::Rejoin,
];

#[derive(Debug, thiserror::Error)]
pub enum FailErr<E: std::error::Error + 'static> {
    #[error(transparent)]
    Inner(E),
    #[error("injected failure in {0:?}")]
    Injected(At),
}

#[derive(Debug)]
struct Plan {
    at: At,
    /// Fail the call with this 0-based index among calls of that kind.
    nth: usize,
    /// Fail every call of that kind from the `nth` on.
    from_then_on: bool,
    calls: AtomicUsize,
    fired: AtomicBool,
}

impl Plan {
    fn hit(&self, at: At) -> bool {
        if at != self.at {
            return false;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == self.nth || (self.from_then_on && n > self.nth) {
            self.fired.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

#[derive(Debug, Clone)]
pub struct Failing<C> {
    pub inner: C,
    plan: Arc<Plan>,
}

impl<C> Failing<C> {
    pub fn new(inner: C, at: At, nth: usize) -> Self {
        Self::build(inner, at, nth, false)
    }

    /// Fails every call of kind `at` from the `nth` on.
    pub fn from(inner: C, at: At, nth: usize) -> Self {
        Self::build(inner, at, nth, true)
    }

    fn build(inner: C, at: At, nth: usize, from_then_on: bool) -> Self {
        Self {
            inner,
            plan: Arc::new(Plan {
                at,
                nth,
                from_then_on,
                calls: AtomicUsize::new(0),
                fired: AtomicBool::new(false),
            }),
        }
    }

    pub fn fired(&self) -> bool {
        self.plan.fired.load(Ordering::SeqCst)
    }

    /// How many calls of the chosen kind were made.
    pub fn calls(&self) -> usize {
        self.plan.calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct FailingNode<N> {
    inner: N,
    plan: Arc<Plan>,
}

pub struct MapErr<P>(P);

impl<P: HealthProbe> HealthProbe for MapErr<P> {
    type Error = FailErr<P::Error>;

    async fn check(&self) -> Result<Health, Self::Error> {
        self.0.check().await.map_err(FailErr::Inner)
    }

    fn wake(&self) -> impl Future<Output = ()> + Send {
        self.0.wake()
    }
}

macro_rules! guarded {
    ($plan:expr, $at:expr, $call:expr) => {{
        if $plan.hit($at) {
            return Err(FailErr::Injected($at));
        }
        $call.await.map_err(FailErr::Inner)
    }};
}

impl<N: Node> Node for FailingNode<N> {
    type Error = FailErr<N::Error>;

    fn id(&self) -> &NodeId {
        self.inner.id()
    }

    async fn stop(&self) -> Result<(), Self::Error> {
        guarded!(self.plan, At::Stop, self.inner.stop())
    }

    async fn start(&self) -> Result<(), Self::Error> {
        guarded!(self.plan, At::Start, self.inner.start())
    }

    async fn status(&self) -> Result<NodeStatus, Self::Error> {
        self.inner.status().await.map_err(FailErr::Inner)
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, Self::Error> {
        guarded!(self.plan, At::Apply, self.inner.apply(change))
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), Self::Error> {
        self.inner.revert(record).await.map_err(FailErr::Inner)
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, Self::Error> {
        self.inner.is_applied(change).await.map_err(FailErr::Inner)
    }
}

impl<C: Cluster> Cluster for Failing<C> {
    type Node = FailingNode<C::Node>;
    type Error = FailErr<C::Error>;

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn topology(&self) -> Result<Topology, Self::Error> {
        self.inner.topology().await.map_err(FailErr::Inner)
    }

    fn node(&self, id: &NodeId) -> Option<Self::Node> {
        self.inner.node(id).map(|inner| FailingNode {
            inner,
            plan: self.plan.clone(),
        })
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        self.inner.knobs(procedure)
    }

    async fn read_knob(&self, name: &str) -> Result<String, Self::Error> {
        self.inner.read_knob(name).await.map_err(FailErr::Inner)
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), Self::Error> {
        guarded!(self.plan, At::WriteKnob, self.inner.write_knob(name, value))
    }

    async fn drain(&self, node: &NodeId) -> Result<(), Self::Error> {
        guarded!(self.plan, At::Drain, self.inner.drain(node))
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.drained(node))
    }

    async fn quiesce(&self, node: &NodeId) -> Result<(), Self::Error> {
        guarded!(self.plan, At::Quiesce, self.inner.quiesce(node))
    }

    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.quiesced(node))
    }

    fn stopped<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.stopped(node))
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.ready(node))
    }

    async fn rejoin(&self, node: &NodeId) -> Result<(), Self::Error> {
        guarded!(self.plan, At::Rejoin, self.inner.rejoin(node))
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.rejoined(node))
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = Self::Error> + '_ {
        MapErr(self.inner.fully_healthy())
    }

    fn safe_to_stop<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = Self::Error> + 'a {
        MapErr(self.inner.safe_to_stop(node))
    }

    fn classify(&self, error: &Self::Error) -> ErrorClass {
        match error {
            FailErr::Inner(e) => self.inner.classify(e),
            FailErr::Injected(_) => ErrorClass::Fatal,
        }
    }
}
