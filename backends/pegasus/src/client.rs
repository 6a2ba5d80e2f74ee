//! A small data-path client for one table: put and get through the partitions' primaries,
//! with the routing refreshed from the metas whenever a server refuses, as Pegasus's
//! clients do. rollout uses it to measure what a client sees during a rollout (failed
//! requests, and lost writes from a ledger of acknowledged ones).
//!
//! A key is sent in Pegasus's format (the hash key's length as a big-endian u16, the hash
//! key, an empty sort key), but routed by a 64-bit FNV-1a hash of it (sent as the header's
//! partition hash), not by Pegasus's CRC64 of the hash key: it works against the emulator,
//! which takes the partition the header names; a real cluster would find its keys in other
//! partitions than its own clients do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::frame::{self, RequestMeta};
use crate::messages::Message;
use crate::messages::{QueryConfigRequest, QueryConfigResponse, rpc as meta_rpc};
use crate::meta::MetaClient;
use crate::rrdb::{DataResponse, NOT_FOUND, OK, UpdateRequest, rpc};
use crate::thrift::{Reader, Type};
use crate::transport::Connection;
use crate::types::Gpid;

/// A request that did not succeed within its deadline, with the last reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} of a key in table {table} failed within {after:?}: {last}")]
pub struct DataError {
    /// `put` or `get`.
    pub op: &'static str,
    /// The table.
    pub table: String,
    /// The deadline.
    pub after: Duration,
    /// The last failure.
    pub last: String,
}

struct Routes {
    app_id: i32,
    primaries: Vec<Option<SocketAddr>>,
}

/// A client of one table.
pub struct DataClient {
    meta: MetaClient,
    table: String,
    timeout: Duration,
    retry: Duration,
    routes: Mutex<Option<Arc<Routes>>>,
    conns: Mutex<HashMap<SocketAddr, Arc<Connection>>>,
}

impl std::fmt::Debug for DataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataClient")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn fnv(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl DataClient {
    /// A client of `table` through the metas `metas`; each request retries every `retry`
    /// until `timeout`.
    pub fn new(metas: &[SocketAddr], table: &str, timeout: Duration, retry: Duration) -> Self {
        Self {
            meta: MetaClient::new(metas, timeout.max(Duration::from_millis(200))),
            table: table.to_string(),
            timeout,
            retry,
            routes: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn refresh(&self) -> Result<Arc<Routes>, String> {
        let q: QueryConfigResponse = self
            .meta
            .call(
                meta_rpc::QUERY_CONFIG,
                &QueryConfigRequest {
                    app_name: self.table.clone(),
                    partition_indices: Vec::new(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        // Sized by the configurations received, not by a count the server could inflate.
        let count = q
            .partitions
            .iter()
            .map(|p| p.pid.partition_index.max(0) as usize + 1)
            .max()
            .unwrap_or(0);
        let mut primaries = vec![None; count];
        for p in &q.partitions {
            if let Some(slot) = primaries.get_mut(p.pid.partition_index.max(0) as usize) {
                *slot = p.primary.0.map(SocketAddr::V4);
            }
        }
        let routes = Arc::new(Routes {
            app_id: q.app_id,
            primaries,
        });
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = Some(routes.clone());
        Ok(routes)
    }

    fn conn(&self, a: SocketAddr) -> Arc<Connection> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(a)
            .or_insert_with(|| Arc::new(Connection::new(a)))
            .clone()
    }

    /// `key` as Pegasus stores it: hash key length (u16, big-endian), hash key, sort key
    /// (empty here).
    fn encode_key(key: &[u8]) -> Vec<u8> {
        let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(key.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&key[..usize::from(len)]);
        out
    }

    /// One attempt: the response, or why it failed.
    async fn attempt(
        &self,
        op: &str,
        key: &[u8],
        value: Option<&[u8]>,
        fresh: bool,
        timeout: Duration,
    ) -> Result<DataResponse, String> {
        let cached = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let routes = match cached {
            Some(r) if !fresh => r,
            _ => self.refresh().await?,
        };
        let key = &Self::encode_key(key);
        let count = routes.primaries.len().max(1) as u64;
        let hash = fnv(key);
        let pidx = (hash % count) as i32;
        let Some(primary) = routes.primaries.get(pidx as usize).copied().flatten() else {
            return Err(format!("partition {pidx} has no primary"));
        };
        let meta = RequestMeta {
            gpid: Gpid::new(routes.app_id, pidx),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            partition_hash: hash,
        };
        let resp = self
            .conn(primary)
            .send(op, timeout, |seqid| match value {
                Some(v) => frame::encode_request(op, seqid, meta, |w| {
                    UpdateRequest {
                        key: key.to_vec(),
                        value: v.to_vec(),
                        expire_ts_seconds: 0,
                    }
                    .write(w)
                }),
                None => frame::encode_request_blob(op, seqid, meta, key),
            })
            .await
            .map_err(|e| e.to_string())?;
        let Some((Type::Struct, body)) = resp.result else {
            return Err(format!("{primary}: {op}: no result"));
        };
        let mut r = Reader::new(&body);
        let out = if value.is_some() {
            DataResponse::read_update(&mut r)
        } else {
            DataResponse::read_read(&mut r, false)
        };
        out.map_err(|e| format!("{primary}: {op}: {e}"))
    }

    async fn with_retries(
        &self,
        op: &'static str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<DataResponse, DataError> {
        let deadline = Instant::now() + self.timeout;
        let mut fresh = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.attempt(op, key, value, fresh, left).await {
                Ok(r) if r.error == OK || r.error == NOT_FOUND => return Ok(r),
                Ok(r) => format!("storage error {}", r.error),
                Err(e) => e,
            };
            if Instant::now() + self.retry > deadline {
                return Err(DataError {
                    op: if value.is_some() { "put" } else { "get" },
                    table: self.table.clone(),
                    after: self.timeout,
                    last,
                });
            }
            tokio::time::sleep(self.retry).await;
            fresh = true;
        }
    }

    /// Writes `value` at `key`; `Ok` once the primary acknowledged it.
    ///
    /// # Errors
    /// No acknowledgement within the timeout.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), DataError> {
        self.with_retries(rpc::PUT, key, Some(value))
            .await
            .map(drop)
    }

    /// Reads `key`: its value, or `None` when the table does not have it.
    ///
    /// # Errors
    /// No answer within the timeout.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DataError> {
        let r = self.with_retries(rpc::GET, key, None).await?;
        Ok((r.error == OK).then(|| r.value.unwrap_or_default()))
    }
}
