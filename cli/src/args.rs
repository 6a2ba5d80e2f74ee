//! The command-line grammar both systems share: the change and the selection, the policy
//! flags, the emulated strategy, and the actions of `rollout pegasus|openmldb`.

use rollout_core::{Change, NodeId, Spec};

use crate::common::BadInput;

/// The change and the selection, one grammar for both systems: `--restart` (the default),
/// `--upgrade VERSION`, `--set FILE:KEY=VALUE` (repeatable; an INI key as `SECTION.KEY`),
/// and `--role` or `--node` to roll only part of the cluster.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ChangeArgs {
    /// Restart every selected node with what it has (the default change).
    #[arg(long, conflicts_with_all = ["upgrade", "set"])]
    pub(crate) restart: bool,
    /// Upgrade every selected node to VERSION (its package staged as the deployment says).
    #[arg(long, value_name = "VERSION", conflicts_with = "set")]
    pub(crate) upgrade: Option<String>,
    /// A configuration update, FILE:KEY=VALUE; an INI key as SECTION.KEY
    /// (config.ini:replication.mutation_2pc_min_replica_count=2, tablet.flags:KEY=VALUE);
    /// repeatable.
    #[arg(long, value_name = "FILE:KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Roll only the nodes of this role (as the plan names roles); repeatable.
    #[arg(long, conflicts_with = "node")]
    pub(crate) role: Vec<String>,
    /// Roll only this node, HOST:PORT as the plan names it; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) node: Vec<String>,
}

impl ChangeArgs {
    /// The change: `--set`, else `--upgrade`, else `legacy` (the older `--change` value,
    /// parsed by `parse_legacy`), else a restart. `conf_dir` puts a bare file name under
    /// the node's `conf/` (OpenMLDB's layout).
    pub(crate) fn change(
        &self,
        legacy: Option<&str>,
        parse_legacy: impl Fn(&str) -> anyhow::Result<Change>,
        conf_dir: bool,
    ) -> Result<Change, BadInput> {
        let given = usize::from(self.restart)
            + usize::from(self.upgrade.is_some())
            + usize::from(!self.set.is_empty());
        if let Some(l) = legacy.filter(|l| *l != "restart") {
            if given > 0 {
                return Err(BadInput(format!(
                    "--change {l} and --restart, --upgrade or --set: give one change"
                )));
            }
            return parse_legacy(l).map_err(|e| BadInput(format!("{e:#}")));
        }
        if let Some(v) = &self.upgrade {
            if v.trim().is_empty() {
                return Err(BadInput("--upgrade needs a VERSION".into()));
            }
            return Ok(Change::Upgrade { version: v.clone() });
        }
        if self.set.is_empty() {
            return Ok(Change::Restart);
        }
        let mut edits = Vec::new();
        for s in &self.set {
            let bad = || BadInput(format!("--set {s}: expected FILE:KEY=VALUE"));
            let (file, kv) = s.split_once(':').ok_or_else(bad)?;
            let (key, value) = kv.split_once('=').ok_or_else(bad)?;
            if file.is_empty() {
                return Err(BadInput(format!("--set {s}: no file")));
            }
            if key.is_empty() {
                return Err(BadInput(format!("--set {s}: no key")));
            }
            let file = if conf_dir && !file.contains('/') {
                format!("conf/{file}")
            } else {
                file.to_string()
            };
            edits.push(rollout_core::ConfigEdit::Set {
                file,
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        Ok(Change::Config { edits })
    }

    /// `spec` limited to `--role` or `--node`.
    pub(crate) fn select(&self, spec: Spec) -> Spec {
        if !self.node.is_empty() {
            spec.selection(rollout_core::policy::Selection::Nodes(
                self.node.iter().map(NodeId::new).collect(),
            ))
        } else if !self.role.is_empty() {
            spec.selection(rollout_core::policy::Selection::Roles(self.role.clone()))
        } else {
            spec
        }
    }
}

/// What `rollout pegasus|openmldb ACTION` does; the examples' mode flags (`--plan`, `--run`,
/// `--status`, `--abort`, `--emulate`) say the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print the plan of a real cluster; changes nothing.
    Plan,
    /// Roll a real cluster (needs `--cluster`).
    Run,
    /// Print the state of the rollout in the journal; changes nothing.
    Status,
    /// End the journal's interrupted rollout (needs `--cluster`).
    Abort,
    /// Start the emulator and roll it (`--serve` keeps it serving instead).
    Emulate,
}

impl Action {
    /// Every action, in the order `--help` lists them, with its one-line description.
    pub const ALL: [(Self, &'static str, &'static str); 5] = [
        (
            Self::Plan,
            "plan",
            "Print the plan for a real cluster; changes nothing",
        ),
        (
            Self::Run,
            "run",
            "Roll a real cluster, one safe step at a time (needs --cluster)",
        ),
        (
            Self::Status,
            "status",
            "Print the state of the rollout in the journal; changes nothing",
        ),
        (
            Self::Abort,
            "abort",
            "End the journal's interrupted rollout: knobs restored, a stopped node started (needs --cluster)",
        ),
        (
            Self::Emulate,
            "emulate",
            "Start the emulator and roll it, or keep it serving with --serve",
        ),
    ];
}

/// `base` (an example's command) as the subcommands of one system, the mode flags hidden
/// since the action sets them.
pub(crate) fn action_commands(
    base: clap::Command,
    name: &'static str,
    about: &'static str,
) -> clap::Command {
    let mut system = clap::Command::new(name)
        .about(about)
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (_, action, what) in Action::ALL {
        let mut c = base.clone().name(action).about(what).version(None::<&str>);
        for flag in ["plan", "run", "status", "abort", "emulate"] {
            c = c.mut_arg(flag, |a| a.hide(true));
        }
        system = system.subcommand(c);
    }
    system
}

/// `--strategy` of the emulated rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EmulatedStrategy {
    /// The high-availability steps (drain, quiesce, fenced moves).
    Ha,
    /// The upstream simplified steps: restart and wait.
    Naive,
}

impl EmulatedStrategy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ha => "ha",
            Self::Naive => "naive",
        }
    }

    pub(crate) fn sim(self) -> rollout_sim::Strategy {
        match self {
            Self::Ha => rollout_sim::Strategy::Ha,
            Self::Naive => rollout_sim::Strategy::Naive,
        }
    }

    pub(crate) fn procedure(self) -> rollout_core::Procedure {
        match self {
            Self::Ha => rollout_core::Procedure::HighAvailability,
            Self::Naive => rollout_core::Procedure::Simple,
        }
    }
}

/// Sets a system's mode flags (`--plan`, `--run`, `--status`, `--abort`, `--emulate`, in that
/// order) from a `rollout` action.
pub(crate) fn set_modes(action: Action, flags: [&mut bool; 5]) {
    let actions = [
        Action::Plan,
        Action::Run,
        Action::Status,
        Action::Abort,
        Action::Emulate,
    ];
    for (flag, a) in flags.into_iter().zip(actions) {
        *flag = action == a;
    }
}

/// The policy flags of a roll, real or emulated: a canary and what a wait past its
/// deadline does.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Halt after this many nodes (a canary); run the same command again to go on.
    #[arg(long, value_name = "N")]
    pub(crate) canary: Option<usize>,
    /// What a wait past its deadline does: abort (restore knobs and stop), pause (halt,
    /// keeping state for a resume) or skip (leave a node out, only before it is stopped).
    #[arg(long, value_enum)]
    pub(crate) on_timeout: Option<OnTimeoutArg>,
}

/// `--on-timeout` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum OnTimeoutArg {
    Abort,
    Pause,
    Skip,
}

impl PolicyArgs {
    /// `policy` with these flags.
    pub(crate) fn apply(&self, mut policy: rollout_core::Policy) -> rollout_core::Policy {
        if let Some(n) = self.canary {
            policy = policy.canary(n);
        }
        if let Some(t) = self.on_timeout {
            policy = policy.on_timeout(match t {
                OnTimeoutArg::Abort => rollout_core::policy::OnTimeout::Abort,
                OnTimeoutArg::Pause => rollout_core::policy::OnTimeout::Pause,
                OnTimeoutArg::Skip => rollout_core::policy::OnTimeout::Skip,
            });
        }
        policy
    }
}
