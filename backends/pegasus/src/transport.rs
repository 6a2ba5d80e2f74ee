//! One TCP connection to one Pegasus server: requests are pipelined and matched to their
//! responses by sequence id; every call has a deadline; a transport error closes the
//! connection, fails every call waiting on it, and the next call connects again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, oneshot};

use crate::frame::{self, RequestMeta, Response};
use crate::messages::Message;
use crate::thrift::{DecodeError, Reader, Type};

/// What went wrong talking to one server.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Connecting, writing or reading failed, or the server closed the connection.
    #[error("{server}: {rpc}: connection failed: {reason}")]
    Transport {
        /// The server.
        server: SocketAddr,
        /// The RPC.
        rpc: String,
        /// What happened.
        reason: String,
    },
    /// No answer before the deadline.
    #[error("{server}: {rpc}: no answer within {after:?}")]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// The RPC.
        rpc: String,
        /// The deadline.
        after: Duration,
    },
    /// The server's bytes are not a valid answer.
    #[error("{server}: {rpc}: a malformed answer: {source}")]
    Decode {
        /// The server.
        server: SocketAddr,
        /// The RPC.
        rpc: String,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// The server's RPC layer refused the call (`ERR_HANDLER_NOT_FOUND`, `ERR_TIMEOUT`, ...).
    #[error("{server}: {rpc}: the server answered {error}")]
    Rpc {
        /// The server.
        server: SocketAddr,
        /// The RPC.
        rpc: String,
        /// The rDSN error name.
        error: String,
    },
}

impl CallError {
    /// Whether a retry (on this or another server) may help: transport failures, timeouts
    /// and the RPC layer's own busy errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Rpc { error, .. } => matches!(
                error.as_str(),
                "ERR_TIMEOUT" | "ERR_BUSY" | "ERR_NETWORK_FAILURE" | "ERR_SERVICE_NOT_ACTIVE"
            ),
            Self::Decode { .. } => false,
        }
    }
}

type Pending = Arc<std::sync::Mutex<HashMap<i32, oneshot::Sender<Result<Response, String>>>>>;

struct Live {
    write: OwnedWriteHalf,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
    /// Set by the reader when the connection ended: the next call opens a new one.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connection to one server, opened on first use and again after any failure.
pub struct Connection {
    server: SocketAddr,
    live: Mutex<Option<Live>>,
    seqid: AtomicI32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection to `server`; nothing is opened yet.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            live: Mutex::new(None),
            seqid: AtomicI32::new(1),
        }
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Calls `rpc` with `req` and decodes the response struct, within `timeout`.
    ///
    /// # Errors
    /// [`CallError`] naming the server and the RPC.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let bytes = self.result(rpc, req, timeout, Type::Struct).await?;
        Resp::read(&mut Reader::new(&bytes)).map_err(|e| self.decode(rpc, e))
    }

    /// Calls `rpc` whose answer is a bare string (`RPC_CLI_CLI_CALL`).
    ///
    /// # Errors
    /// [`CallError`] naming the server and the RPC.
    pub async fn call_string<Req: Message>(
        &self,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<String, CallError> {
        let bytes = self.result(rpc, req, timeout, Type::String).await?;
        Reader::new(&bytes)
            .string()
            .map_err(|e| self.decode(rpc, e))
    }

    fn decode(&self, rpc: &str, source: DecodeError) -> CallError {
        CallError::Decode {
            server: self.server,
            rpc: rpc.to_string(),
            source,
        }
    }

    /// The result's bytes, which must be of type `want`.
    async fn result<Req: Message>(
        &self,
        rpc: &str,
        req: &Req,
        timeout: Duration,
        want: Type,
    ) -> Result<Vec<u8>, CallError> {
        match self.raw(rpc, req, timeout).await?.result {
            Some((ty, bytes)) if ty == want => Ok(bytes),
            Some((ty, _)) => Err(self.decode(
                rpc,
                DecodeError::Invalid(format!("a result of type {ty:?}, expected {want:?}")),
            )),
            None => Err(self.decode(
                rpc,
                DecodeError::Missing {
                    within: "the result",
                    field: "success",
                },
            )),
        }
    }

    async fn raw<Req: Message>(
        &self,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let meta = RequestMeta {
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            ..RequestMeta::default()
        };
        self.send(rpc, timeout, |seqid| {
            frame::encode_request(rpc, seqid, meta, |w| req.write(w))
        })
        .await
    }

    /// Sends the request `encode` makes for a sequence id and waits for its response (the
    /// data path: requests that name their partition in the header).
    ///
    /// # Errors
    /// [`CallError`] naming the server and the RPC; an RPC-layer error (such as
    /// `ERR_INVALID_STATE` from a server that is not the partition's primary) is
    /// [`CallError::Rpc`].
    pub async fn send(
        &self,
        rpc: &str,
        timeout: Duration,
        encode: impl FnOnce(i32) -> Vec<u8>,
    ) -> Result<Response, CallError> {
        let seqid = self.seqid.fetch_add(1, Ordering::Relaxed);
        let bytes = encode(seqid);
        let transport = |reason: String| CallError::Transport {
            server: self.server,
            rpc: rpc.to_string(),
            reason,
        };
        let attempt = async {
            let rx = {
                let mut live = self.live.lock().await;
                if live
                    .as_ref()
                    .is_some_and(|l| l.closed.load(Ordering::Acquire))
                {
                    *live = None;
                }
                if live.is_none() {
                    *live = Some(self.open().await.map_err(|e| transport(e.to_string()))?);
                }
                let l = live.as_mut().expect("opened above");
                let (tx, rx) = oneshot::channel();
                {
                    // Under the pending lock: the reader either has not ended (and will
                    // answer or fail this call) or has, and the call fails now.
                    let mut pending = lock(&l.pending);
                    if l.closed.load(Ordering::Acquire) {
                        drop(pending);
                        *live = None;
                        return Err(transport("the connection closed".into()));
                    }
                    pending.insert(seqid, tx);
                }
                if let Err(e) = l.write.write_all(&bytes).await {
                    *live = None;
                    return Err(transport(e.to_string()));
                }
                rx
            };
            match rx.await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(reason)) => Err(transport(reason)),
                Err(_) => Err(transport("the connection closed".into())),
            }
        };
        let resp = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                // The deadline may have cut a write short: the stream's framing is lost, so
                // the next call starts on a fresh connection.
                *self.live.lock().await = None;
                return Err(CallError::Timeout {
                    server: self.server,
                    rpc: rpc.to_string(),
                    after: timeout,
                });
            }
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // Whatever broke, the next call starts on a fresh connection.
                *self.live.lock().await = None;
                return Err(e);
            }
        };
        let expected = format!("{rpc}_ACK");
        if resp.error != "ERR_OK" {
            return Err(CallError::Rpc {
                server: self.server,
                rpc: rpc.to_string(),
                error: resp.error,
            });
        }
        if resp.name != expected {
            return Err(CallError::Decode {
                server: self.server,
                rpc: rpc.to_string(),
                source: DecodeError::Invalid(format!(
                    "the answer is {:?}, expected {expected:?}",
                    resp.name
                )),
            });
        }
        Ok(resp)
    }

    async fn open(&self) -> std::io::Result<Live> {
        let stream = TcpStream::connect(self.server).await?;
        stream.set_nodelay(true)?;
        let (mut read, write) = stream.into_split();
        let pending: Pending = Arc::default();
        let mine = pending.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = closed.clone();
        let reader = tokio::spawn(async move {
            let failure = loop {
                let mut head = [0u8; 4];
                if let Err(e) = read.read_exact(&mut head).await {
                    break e.to_string();
                }
                let len = match frame::response_len(head) {
                    Ok(n) => n,
                    Err(e) => break e.to_string(),
                };
                let mut body = vec![0u8; len - 4];
                if let Err(e) = read.read_exact(&mut body).await {
                    break e.to_string();
                }
                match frame::read_response(&body) {
                    Ok(resp) => {
                        if let Some(tx) = lock(&mine).remove(&resp.seqid) {
                            let _ = tx.send(Ok(resp));
                        }
                    }
                    Err(e) => break format!("a malformed response: {e}"),
                }
            };
            // The connection is done: no later call may wait on it, and every call still
            // waiting learns why it ended.
            let mut waiting = lock(&mine);
            flag.store(true, Ordering::Release);
            for (_, tx) in waiting.drain() {
                let _ = tx.send(Err(failure.clone()));
            }
        });
        Ok(Live {
            write,
            pending,
            reader,
            closed,
        })
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
