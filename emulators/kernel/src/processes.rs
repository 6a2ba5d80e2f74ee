//! Emulated processes that are real OS processes: an emulator's serve mode gives each node of
//! its world a process of its own (started by a deployment's start command, found by its pid
//! file, stopped by signals), so that an orchestrator in another process rolls the emulated
//! cluster through real process control, the node agent and pid files included. Both the
//! Pegasus and the OpenMLDB emulators use it.
//!
//! Each such process ([`run_process`]) holds one TCP connection to the emulator's control
//! port ([`serve`]) for as long as it lives, speaking lines of text:
//!
//! - the process sends `start <endpoint>`: the world's node starts (or, when it already
//!   runs, as at the emulator's start, the process takes it over); the emulator answers `ok`,
//!   or `error <why>` and the process exits with an error (as a server whose port is taken);
//! - on SIGTERM the process sends `stop`: the world's node shuts down cleanly, taking its
//!   stop time, and the emulator closes the connection when it is down;
//! - the emulator closes the connection when the world's node is no longer running, and
//!   the process exits with status 0;
//! - a connection that closes without `stop` (the process was killed, SIGKILL) kills the
//!   world's node at once, as a crash ([`SimCluster::kill`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::{Cluster, Node, NodeId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use rollout_sim::SimCluster;

/// Which node of the world an emulated process's endpoint (`HOST:PORT`) is.
pub type Resolve = Arc<dyn Fn(&str) -> Option<NodeId> + Send + Sync>;

/// The control port of a serving emulator's processes ([`serve`]): served until dropped.
#[derive(Debug)]
pub struct Processes {
    task: JoinHandle<()>,
    attached: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl Processes {
    /// How many emulated processes hold their node now.
    pub fn attached(&self) -> usize {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the control port of emulated processes that are real OS processes, each running
/// [`run_process`], on `listener` (loopback), for the nodes of `sim` that `resolve` names: a
/// process holds one connection for as long as it lives; its `start` starts the world's node
/// (or takes over one that already runs), its `stop` (on SIGTERM) shuts the node down
/// cleanly, the connection is closed when the node is down, and a connection that closes
/// without `stop` (SIGKILL) kills the node at once, as a crash. Call it inside a tokio
/// runtime.
pub fn serve(sim: SimCluster, listener: TcpListener, resolve: Resolve) -> Processes {
    let attached: Arc<Mutex<BTreeSet<NodeId>>> = Arc::default();
    let shared = attached.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: not a busy loop.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (sim, resolve, attached) = (sim.clone(), resolve.clone(), attached.clone());
            tokio::spawn(async move {
                if let Err(e) = process(stream, &sim, &*resolve, &attached).await {
                    tracing::debug!(error = %e, "an emulated process's connection ended");
                }
            });
        }
    });
    Processes {
        task,
        attached: shared,
    }
}

/// Releases a node's claim when its connection ends, however it ends.
struct Claim<'a>(&'a Mutex<BTreeSet<NodeId>>, NodeId);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

async fn process(
    stream: TcpStream,
    sim: &SimCluster,
    resolve: &(dyn Fn(&str) -> Option<NodeId> + Send + Sync),
    attached: &Mutex<BTreeSet<NodeId>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(());
    };
    let Some(endpoint) = first.strip_prefix("start ") else {
        write
            .write_all(b"error expected: start <endpoint>\n")
            .await?;
        return Ok(());
    };
    let Some(id) = resolve(endpoint.trim()) else {
        let line = format!("error no emulated process serves {endpoint}\n");
        write.write_all(line.as_bytes()).await?;
        return Ok(());
    };
    if !attached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone())
    {
        let line = format!("error {endpoint} is already running (its port is taken)\n");
        write.write_all(line.as_bytes()).await?;
        return Ok(());
    }
    let _claim = Claim(attached, id.clone());
    let node = Cluster::node(sim, &id).ok_or_else(|| std::io::Error::other("no such node"))?;
    if sim.running(&id) != Some(true) {
        node.start()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    write.write_all(b"ok\n").await?;
    let mut stopping = false;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            line = lines.next_line(), if !stopping => match line {
                Ok(Some(l)) if l.trim() == "stop" => {
                    stopping = true;
                    node.stop()
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                }
                Ok(Some(_)) => {}
                // Gone without a word: killed.
                Ok(None) | Err(_) => {
                    sim.kill(&id);
                    return Ok(());
                }
            },
            _ = tick.tick() => {
                if sim.running(&id) != Some(true) {
                    // Down (stopped, or crashed in the world): the process ends.
                    return Ok(());
                }
            }
        }
    }
}

/// The body of one emulated process: connects to the emulator's control port `control`
/// (`HOST:PORT`), starts (or takes over) the world's node at `endpoint`, and lives until the
/// node is down. When `terminate` completes (SIGTERM, say) the node shuts down cleanly first.
///
/// # Errors
/// The control port cannot be reached, or the emulator refused the start (its reason).
pub async fn run_process(
    control: &str,
    endpoint: &str,
    terminate: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(control).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(format!("start {endpoint}\n").as_bytes())
        .await?;
    match lines.next_line().await? {
        Some(l) if l == "ok" => {}
        Some(l) => {
            return Err(std::io::Error::other(
                l.strip_prefix("error ").unwrap_or(&l).to_string(),
            ));
        }
        None => return Err(std::io::Error::other("the emulator closed the connection")),
    }
    let mut terminate = std::pin::pin!(terminate);
    let mut asked = false;
    loop {
        tokio::select! {
            () = &mut terminate, if !asked => {
                asked = true;
                write.write_all(b"stop\n").await?;
            }
            line = lines.next_line() => match line {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Ok(()),
            },
        }
    }
}
