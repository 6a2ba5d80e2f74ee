//! One emulated server's `baidu_std` connection, the binary protocol the OpenMLDB client SDK
//! speaks (docs/upstream/openmldb-sdk.md §2; `src/brpc/policy/baidu_rpc_protocol.cpp` of
//! apache/brpc@d2b73ec9, the commit OpenMLDB pins): a 12-byte header (`PRPC`, the body size
//! and the meta size, big-endian u32), an `RpcMeta`, the request message, an attachment.
//! Requests are answered concurrently, each echoing its `correlation_id`; framework errors go
//! in the response meta (`ENOSERVICE` 1001, `ENOMETHOD` 1002, `EREQUEST` 1003, `ELOGOFF` 2003)
//! with an empty payload, application errors in the response message's `code`. A
//! connection's first message is verified (`VerifyRpcRequest`) by OpenMLDB's authenticator,
//! which on 0.9 takes any credential, none included, while `skip_grant_tables` is true, its
//! default (`BRPCAuthenticator::VerifyCredential`, `src/flags.cc` @v0.9.2); 0.8.5 has no
//! authenticator. brpc serves HTTP on the same port and tells the two apart by the first
//! bytes; `serve_connection` in the crate root does the same.

use std::sync::Arc;

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use rollout_core::NodeId;
use rollout_sim::SimCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Mutex;

use crate::Directory;
use crate::http::Reply;
use crate::proto;

/// The four bytes a `baidu_std` message starts with.
pub(crate) const MAGIC: &[u8; 4] = b"PRPC";

/// `FLAGS_max_body_size` (`src/brpc/protocol.cpp`): a larger body is a parse error.
const MAX_BODY: usize = 64 << 20;

const ENOSERVICE: i32 = 1001;
const ENOMETHOD: i32 = 1002;
const EREQUEST: i32 = 1003;
const EINTERNAL: i32 = 2001;
const ELOGOFF: i32 = 2003;

fn meta_desc() -> MessageDescriptor {
    proto::pool()
        .get_message_by_name("brpc.policy.RpcMeta")
        .expect("brpc_meta.proto is compiled in")
}

/// Serves `baidu_std` requests on one connection, whose first bytes (`MAGIC` included) the
/// caller already read into `head`, until the client closes it or sends a frame brpc would
/// drop the connection for.
pub(crate) async fn connection(
    stream: TcpStream,
    head: Vec<u8>,
    sim: SimCluster,
    dir: Arc<Directory>,
    me: NodeId,
) {
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(Mutex::new(wr));
    let mut buf = head;
    loop {
        if read_to(&mut rd, &mut buf, 12).await.is_err() || &buf[..4] != MAGIC {
            return;
        }
        let body = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let meta_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        if body > MAX_BODY || meta_len > body {
            return;
        }
        if read_to(&mut rd, &mut buf, 12 + body).await.is_err() {
            return;
        }
        let frame: Vec<u8> = buf.drain(..12 + body).skip(12).collect();
        let Ok(meta) = DynamicMessage::decode(meta_desc(), &frame[..meta_len]) else {
            return;
        };
        let Some(request) = proto::get(&meta, "request").and_then(|v| v.as_message().cloned())
        else {
            // Not a request (a response sent to a server): brpc drops the connection.
            return;
        };
        let correlation = proto::get(&meta, "correlation_id")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let attachment = proto::get(&meta, "attachment_size")
            .and_then(|v| v.as_i32())
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let compressed = proto::get(&meta, "compress_type")
            .and_then(|v| v.as_i32())
            .is_some_and(|c| c != 0);
        let Some(end) = body.checked_sub(attachment).filter(|e| *e >= meta_len) else {
            return;
        };
        let payload = frame[meta_len..end].to_vec();
        let service = proto::string(&request, "service_name").unwrap_or_default();
        let method = proto::string(&request, "method_name").unwrap_or_default();
        let (sim, dir, me, wr) = (sim.clone(), dir.clone(), me.clone(), wr.clone());
        tokio::spawn(async move {
            let answer = if compressed {
                Err((
                    EREQUEST,
                    "the emulator reads uncompressed requests only".into(),
                ))
            } else {
                call(&sim, &dir, &me, &service, &method, &payload).await
            };
            let _ = send(&wr, correlation, answer).await;
        });
    }
}

/// Reads from `rd` until `buf` holds at least `n` bytes.
async fn read_to(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        match rd.read(&mut chunk).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
    Ok(())
}

/// One call: the method found as `ProcessRpcRequest` finds it (by the full service name),
/// the request parsed from the payload (a missing required field fails it), the answer
/// encoded.
async fn call(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    service: &str,
    name: &str,
    payload: &[u8],
) -> Result<Vec<u8>, (i32, String)> {
    let Some(node) = sim.node_view(me) else {
        return Err((ELOGOFF, "Server is stopping".into()));
    };
    if !node.serving {
        return Err((ELOGOFF, "Server is stopping".into()));
    }
    // A short name is looked up among the services this server has (ENOSERVICE when
    // none), then everything by its full name (ENOMETHOD when that finds nothing).
    let served = match node.role {
        "nameserver" => "openmldb.nameserver.NameServer",
        "tablet" => "openmldb.api.TabletServer",
        _ => "",
    };
    let full = if service.contains('.') {
        service
    } else if served.rsplit('.').next() == Some(service) {
        served
    } else {
        return Err((ENOSERVICE, format!("Fail to find service={service}")));
    };
    let method = proto::method(full, name)
        .filter(|_| full == served)
        .ok_or_else(|| (ENOMETHOD, format!("Fail to find method={full}/{name}")))?;
    let req = DynamicMessage::decode(method.input(), payload)
        .ok()
        .filter(|m| missing_required(m).is_none())
        .ok_or_else(|| {
            (
                EREQUEST,
                format!(
                    "Fail to parse request message, request_size={}",
                    payload.len()
                ),
            )
        })?;
    let reply = match node.role {
        "nameserver" => crate::nameserver::answer(sim, dir, me, name, &req).await,
        _ => crate::tablet::answer(sim, dir, me, name, &req).await,
    };
    match reply {
        Reply::Http(404, text) => Err((ENOMETHOD, text)),
        Reply::Http(_, text) => Err((EINTERNAL, text)),
        Reply::Message(v) => proto::answer(&method, &v)
            .map(|m| m.encode_to_vec())
            .map_err(|e| (EINTERNAL, format!("the emulator's own answer: {e}"))),
    }
}

/// The first required field left unset in `m` or in a message inside it (protobuf's
/// `IsInitialized`, which a brpc server's parse of a request checks).
fn missing_required(m: &DynamicMessage) -> Option<String> {
    for f in m.descriptor().fields() {
        if f.cardinality() == prost_reflect::Cardinality::Required && !m.has_field(&f) {
            return Some(f.full_name().to_string());
        }
        if !m.has_field(&f) {
            continue;
        }
        let value = m.get_field(&f);
        let inner: Vec<&DynamicMessage> = match value.as_ref() {
            Value::Message(x) => vec![x],
            Value::List(items) => items.iter().filter_map(Value::as_message).collect(),
            _ => Vec::new(),
        };
        if let Some(missing) = inner.into_iter().find_map(missing_required) {
            return Some(missing);
        }
    }
    None
}

/// Writes one response: the meta (`response.error_code`, `correlation_id`, `compress_type`
/// always, as `SendRpcResponse` does), then the payload, empty on an error.
async fn send(
    wr: &Mutex<OwnedWriteHalf>,
    correlation: i64,
    answer: Result<Vec<u8>, (i32, String)>,
) -> std::io::Result<()> {
    let desc = meta_desc();
    let mut meta = DynamicMessage::new(desc.clone());
    let response_desc = desc
        .get_field_by_name("response")
        .and_then(|f| f.kind().as_message().cloned())
        .expect("RpcMeta.response is a message");
    let mut response = DynamicMessage::new(response_desc);
    let (code, payload) = match answer {
        Ok(p) => (0, p),
        Err((code, text)) => {
            response.set_field_by_name("error_text", Value::String(text));
            (code, Vec::new())
        }
    };
    response.set_field_by_name("error_code", Value::I32(code));
    meta.set_field_by_name("response", Value::Message(response));
    meta.set_field_by_name("correlation_id", Value::I64(correlation));
    meta.set_field_by_name("compress_type", Value::I32(0));
    let meta = meta.encode_to_vec();
    let (Ok(meta_len), Ok(body)) = (
        u32::try_from(meta.len()),
        u32::try_from(meta.len() + payload.len()),
    ) else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let mut frame = Vec::with_capacity(12 + meta.len() + payload.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&body.to_be_bytes());
    frame.extend_from_slice(&meta_len.to_be_bytes());
    frame.extend_from_slice(&meta);
    frame.extend_from_slice(&payload);
    wr.lock().await.write_all(&frame).await
}
