//! The journal: every step written before and after it runs, so that a crashed rollout can be
//! resumed or aborted, and a lock so that two rollouts of one cluster never overlap.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::model::Procedure;
use crate::model::{ApplyRecord, Change, NodeId};
use crate::replicas::TemporaryReplica;

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Entry {
    /// A rollout begins.
    Begin {
        /// The cluster's name.
        cluster: String,
        /// The change.
        change: Change,
        /// The resolved selection.
        nodes: Vec<NodeId>,
        /// The procedure.
        procedure: Procedure,
        /// Data nodes that were down and held no replica when the rollout began
        /// ([`retired`](crate::plan::retired)): left out of `All` and role selections, and not
        /// watched as failures outside a wave. A resume takes them from here, so that its
        /// selection is the one the rollout began with.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retired: Vec<NodeId>,
    },
    /// A knob's original value, written before the knob is first changed.
    KnobSaved {
        /// The knob.
        name: String,
        /// Its value before the rollout touched it.
        original: String,
    },
    /// A knob was put back to its original value.
    KnobRestored {
        /// The knob.
        name: String,
    },
    /// A node's procedure starts; `boot` is its incarnation before the stop.
    NodeBegin {
        /// The node.
        node: NodeId,
        /// Its boot id before the stop.
        boot: Option<String>,
        /// Its role: a resume finds the node by it when the live topology does not list
        /// it (a coordinator that is stopped is known only to whoever stopped it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<crate::model::Role>,
    },
    /// The node is about to be started (written before the start call).
    NodeStarting {
        /// The node.
        node: NodeId,
    },
    /// The change was applied to a stopped node.
    NodeApplied {
        /// What apply replaced.
        record: ApplyRecord,
    },
    /// A failed start was rolled back: the node runs what it ran before.
    NodeReverted {
        /// The node.
        node: NodeId,
    },
    /// The node is done: restarted, rejoined and the cluster fully healthy.
    NodeDone {
        /// The node.
        node: NodeId,
    },
    /// The node was left out (policy skip, or already at the target).
    NodeSkipped {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// A temporary replica is about to be added (written before the add call, so that a
    /// crash right after it still has it removed).
    TemporaryAdded {
        /// The replica.
        replica: TemporaryReplica,
    },
    /// A temporary replica was removed.
    TemporaryRemoved {
        /// The replica.
        replica: TemporaryReplica,
    },
    /// The rollout halted (canary, pause) and can be resumed.
    Halted {
        /// Why.
        reason: String,
    },
    /// The rollout ended: completed or aborted. Knobs are restored.
    End {
        /// `completed`, `aborted` or `cancelled`.
        outcome: String,
    },
}

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading or writing the journal file failed.
    #[error("journal file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be parsed.
    #[error("journal {path} is corrupt at line {line}; move it aside or repair it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Another rollout holds the lock.
    #[error(
        "another rollout holds the lock ({holder}); wait for it or remove {path} if it is stale"
    )]
    Locked {
        /// The lock file or name.
        path: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// The journal's interrupted rollout was of another cluster.
    #[error(
        "the journal holds an interrupted rollout of cluster {found:?}, not {expected:?}; use that cluster's journal"
    )]
    WrongCluster {
        /// This cluster.
        expected: String,
        /// The journal's.
        found: String,
    },
    /// The journal's interrupted rollout applied another change or selection.
    #[error(
        "the journal holds an interrupted rollout of a different change or selection; resume it with the same spec or abort it first"
    )]
    OtherRollout,
    /// A journal kept elsewhere than in a file (ZooKeeper) could not be read or written.
    #[error("journal at {at}: {reason}")]
    Store {
        /// Where: the server and the path.
        at: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The lock this rollout held is gone (its session expired and another orchestrator
    /// may hold it now): nothing more may be recorded or done.
    #[error(
        "the rollout lock {at} is no longer held by this orchestrator (its session expired; {holder}); it stops here and changes nothing more"
    )]
    LockLost {
        /// The lock.
        at: String,
        /// Who holds it now, if anyone.
        holder: String,
    },
}

/// Where rollouts record their steps.
///
/// Implementations must make an appended entry durable before returning.
pub trait Journal: Send + Sync {
    /// Takes the lock for `owner`.
    ///
    /// # Errors
    /// [`JournalError::Locked`] when another rollout holds it.
    fn lock(&self, owner: &str) -> Result<(), JournalError>;

    /// Releases the lock.
    fn unlock(&self);

    /// Every entry, oldest first.
    ///
    /// # Errors
    /// When the journal cannot be read or is corrupt.
    fn load(&self) -> Result<Vec<Entry>, JournalError>;

    /// Appends one entry durably.
    ///
    /// # Errors
    /// When the entry cannot be written.
    fn append(&self, entry: &Entry) -> Result<(), JournalError>;

    /// Checks that this rollout still holds the lock. The engine calls it right before
    /// every action on the cluster (a knob written, a drain, a stop, a start, an apply...),
    /// so that an orchestrator paused past its lock (a ZooKeeper session that expired while
    /// it was stopped) and woken after another took over changes nothing. A journal shared
    /// between hosts answers from its server; the default checks nothing.
    ///
    /// # Errors
    /// [`JournalError::LockLost`] when the lock is no longer this rollout's, or a store
    /// error when that cannot be told: either way the engine acts no more.
    fn fence(&self) -> Result<(), JournalError> {
        Ok(())
    }
}

impl<J: Journal + ?Sized> Journal for &J {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        (**self).lock(owner)
    }
    fn unlock(&self) {
        (**self).unlock()
    }
    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        (**self).load()
    }
    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        (**self).append(entry)
    }
    fn fence(&self) -> Result<(), JournalError> {
        (**self).fence()
    }
}

/// A journal in memory, shared by clones. For tests, the simulator and embedders that persist
/// elsewhere.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: Vec<Entry>,
    holder: Option<String>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every entry.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock_inner().entries.clone()
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Journal for MemoryJournal {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        let mut inner = self.lock_inner();
        match &inner.holder {
            Some(holder) => Err(JournalError::Locked {
                path: PathBuf::from("<memory>"),
                holder: holder.clone(),
            }),
            None => {
                inner.holder = Some(owner.to_string());
                Ok(())
            }
        }
    }

    fn unlock(&self) {
        self.lock_inner().holder = None;
    }

    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        Ok(self.entries())
    }

    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        self.lock_inner().entries.push(entry.clone());
        Ok(())
    }
}

/// A journal in a file of JSON lines, each fsynced, with a lock file beside it
/// (`<path>.lock`, holding the owner's pid and name) and, when a rollout ends or halts, a
/// summary replaced atomically (`<path>.summary.json`).
///
/// A lock left by a crashed orchestrator is taken over when its pid no longer exists on this
/// host (Linux); otherwise the error names the lock file to remove.
///
/// This is the one place core touches the file system; it does so with blocking calls on
/// small writes.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// A journal at `path`; the file is created on the first append.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn io(&self, path: &Path, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn write_summary(&self, entry: &Entry) -> Result<(), JournalError> {
        let summary = self.sibling(".summary.json");
        let tmp = self.sibling(".summary.json.tmp");
        let body = serde_json::to_vec_pretty(entry).expect("entries always serialize");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &summary)
        };
        write().map_err(|e| self.io(&summary, e))
    }
}

impl Journal for FileJournal {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        let lock = self.sibling(".lock");
        let mine = format!("pid {} {owner}", std::process::id());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(mut f) => {
                    f.write_all(mine.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| self.io(&lock, e))?;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&lock).unwrap_or_else(|_| "unknown".into());
                    if !holder_is_dead(&holder) {
                        return Err(JournalError::Locked { path: lock, holder });
                    }
                    // The process that held it is gone (a crashed orchestrator on this host):
                    // take the lock over, once.
                    tracing::warn!(path = %lock.display(), holder, "taking over a stale lock");
                    fs::remove_file(&lock).map_err(|e| self.io(&lock, e))?;
                }
                Err(e) => return Err(self.io(&lock, e)),
            }
        }
        let holder = fs::read_to_string(&lock).unwrap_or_else(|_| "unknown".into());
        Err(JournalError::Locked { path: lock, holder })
    }

    fn fence(&self) -> Result<(), JournalError> {
        // The lock file still names this process: it was neither removed by hand nor taken
        // over.
        let lock = self.sibling(".lock");
        let mine = format!("pid {} ", std::process::id());
        match fs::read_to_string(&lock) {
            Ok(holder) if holder.starts_with(&mine) => Ok(()),
            Ok(holder) => Err(JournalError::LockLost {
                at: lock.display().to_string(),
                holder: format!("the lock file now names {holder:?}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(JournalError::LockLost {
                at: lock.display().to_string(),
                holder: "the lock file was removed".into(),
            }),
            Err(e) => Err(self.io(&lock, e)),
        }
    }

    fn unlock(&self) {
        // Removing a lock that is already gone is fine; anything else leaves a stale lock
        // that the next run reports with its path.
        let _ = fs::remove_file(self.sibling(".lock"));
    }

    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(f) => BufReader::new(f)
                .read_to_end(&mut bytes)
                .map_err(|e| self.io(&self.path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.path, e)),
        };
        // Bytes after the last newline are a write a crash cut short. The step it records
        // was not confirmed: drop it, and cut the file back so the next append starts clean.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(path = %self.path.display(), "dropping a torn last journal line");
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| self.io(&self.path, e))?;
            f.set_len(whole as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| self.io(&self.path, e))?;
        }
        let mut entries = Vec::new();
        for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let entry = serde_json::from_slice(line).map_err(|source| JournalError::Corrupt {
                path: self.path.clone(),
                line: i + 1,
                source,
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("entries always serialize");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(&self.path, e))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| self.io(&self.path, e))?;
        if matches!(entry, Entry::End { .. } | Entry::Halted { .. }) {
            self.write_summary(entry)?;
        }
        Ok(())
    }
}

/// Whether a lock written as `pid N ...` names a process that no longer exists on this
/// host. Only Linux can tell (through `/proc`); elsewhere a lock is never taken over.
fn holder_is_dead(holder: &str) -> bool {
    let Some(pid) = holder
        .strip_prefix("pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    cfg!(target_os = "linux")
        && Path::new("/proc/self").exists()
        && !Path::new("/proc").join(pid.to_string()).exists()
}

/// What the journal says about the rollout in progress, if any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resume {
    /// Whether an interrupted or halted rollout is in the journal.
    pub active: bool,
    /// Its cluster, change, nodes and procedure.
    pub begin: Option<(String, Change, Vec<NodeId>, Procedure)>,
    /// Knob originals saved and not yet restored, in the order they were saved.
    pub knobs: Vec<(String, String)>,
    /// Nodes done or skipped.
    pub finished: Vec<NodeId>,
    /// Nodes begun but not finished.
    pub in_flight: Vec<InFlight>,
    /// Temporary replicas added and not yet removed.
    pub temporaries: Vec<TemporaryReplica>,
    /// The data nodes the rollout began with as retired (down, holding no replica).
    pub retired: Vec<NodeId>,
}

/// A node the journal shows begun but not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// The node.
    pub node: NodeId,
    /// Its boot id before the stop.
    pub boot: Option<String>,
    /// What apply recorded, unless it was reverted since.
    pub record: Option<ApplyRecord>,
    /// Whether the rollout was about to start it (the entry is written before the call):
    /// with a moved boot id, a stopped node was started once and is not started again by a
    /// resume.
    pub started: bool,
    /// Its role, when the journal recorded it.
    pub role: Option<crate::model::Role>,
}

impl Resume {
    /// The procedure of the rollout in progress (the default when there is none).
    pub fn begin_procedure(&self) -> Procedure {
        self.begin.as_ref().map(|b| b.3).unwrap_or_default()
    }

    /// Reads the entries after the last `Begin`.
    pub fn from_entries(entries: &[Entry]) -> Self {
        let start = entries
            .iter()
            .rposition(|e| matches!(e, Entry::Begin { .. }));
        let Some(start) = start else {
            return Self::default();
        };
        let mut r = Self::default();
        for e in &entries[start..] {
            match e {
                Entry::Begin {
                    cluster,
                    change,
                    nodes,
                    procedure,
                    retired,
                } => {
                    r.active = true;
                    r.begin = Some((cluster.clone(), change.clone(), nodes.clone(), *procedure));
                    r.retired.clone_from(retired);
                }
                Entry::KnobSaved { name, original } => {
                    if !r.knobs.iter().any(|(n, _)| n == name) {
                        r.knobs.push((name.clone(), original.clone()));
                    }
                }
                Entry::KnobRestored { name } => r.knobs.retain(|(n, _)| n != name),
                Entry::NodeBegin { node, boot, role } => {
                    r.in_flight.retain(|f| &f.node != node);
                    r.in_flight.push(InFlight {
                        node: node.clone(),
                        boot: boot.clone(),
                        record: None,
                        started: false,
                        role: role.clone(),
                    });
                }
                Entry::NodeApplied { record } => {
                    if let Some(f) = r.in_flight.iter_mut().find(|f| f.node == record.node) {
                        f.record = Some(record.clone());
                    }
                }
                Entry::NodeStarting { node } => {
                    if let Some(f) = r.in_flight.iter_mut().find(|f| &f.node == node) {
                        f.started = true;
                    }
                }
                Entry::NodeReverted { node } => {
                    if let Some(f) = r.in_flight.iter_mut().find(|f| &f.node == node) {
                        f.record = None;
                    }
                }
                Entry::NodeDone { node } | Entry::NodeSkipped { node, .. } => {
                    r.in_flight.retain(|f| &f.node != node);
                    r.finished.push(node.clone());
                }
                Entry::TemporaryAdded { replica } => {
                    if !r.temporaries.contains(replica) {
                        r.temporaries.push(replica.clone());
                    }
                }
                Entry::TemporaryRemoved { replica } => r.temporaries.retain(|t| t != replica),
                Entry::Halted { .. } => {}
                Entry::End { .. } => r.active = false,
            }
        }
        if !r.active {
            return Self::default();
        }
        r
    }
}
