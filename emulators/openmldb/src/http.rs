//! One emulated server's HTTP connection, as brpc serves it (`src/brpc/policy/
//! http_rpc_protocol.cpp` of apache/brpc@d2b73ec): `GET /version` and `/health` are builtin
//! pages; a call is `POST /<Service>/<Method>` with the service's short or full name and a
//! JSON body decoded by `json2pb`, answered 200 with the response message in JSON, its
//! application error in its `code`; an unknown method is 404, a body that is not the request
//! 400. From 0.9.1 a connection whose first request is a call without an `Authorization`
//! header is closed unanswered (`Server::_authenticator`, checked on a connection's first
//! request only, a builtin page counting as authenticated).

use std::sync::Arc;

use rollout_core::NodeId;
use rollout_sim::SimCluster;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Directory;
use crate::proto;

/// What a call comes to.
pub(crate) enum Reply {
    /// The answer message, in JSON (checked against the method's output before it goes).
    Message(Value),
    /// An HTTP error: status and text.
    Http(u16, String),
}

/// An application error in the method's response message (`code`, `msg`).
pub(crate) fn app(code: i32, msg: &str) -> Reply {
    Reply::Message(json!({"code": code, "msg": msg}))
}

/// A response message with code 0 and its other fields.
pub(crate) fn ok(mut v: Value) -> Reply {
    v["code"] = 0.into();
    v["msg"] = "ok".into();
    Reply::Message(v)
}

/// Serves requests on one connection, whose first bytes the caller already read into
/// `head`, until the client closes it or sends garbage.
pub(crate) async fn connection(
    mut stream: TcpStream,
    head: Vec<u8>,
    sim: SimCluster,
    dir: Arc<Directory>,
    me: NodeId,
) {
    let mut buf = head;
    let mut chunk = [0u8; 8192];
    let mut first = true;
    loop {
        let (head_end, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                break (end + 4, len);
            }
            if buf.len() > 1 << 20 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or("").split_whitespace();
        let (method, path) = (
            request_line.next().unwrap_or(""),
            request_line.next().unwrap_or("/").to_string(),
        );
        let authorized = lines.any(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        });
        let Some(node) = sim.node_view(&me) else {
            return;
        };
        let version = dir.version_of(&node);
        let builtin = method == "GET" && matches!(path.as_str(), "/version" | "/health");
        if first && !builtin && !authorized && version.needs_authorization() {
            // brpc's authenticator fails the connection: nothing is answered.
            return;
        }
        first = false;
        let (status, content_type, reply) = match path.as_str() {
            "/version" if builtin => (200, "text/plain", version.release().to_string()),
            "/health" if builtin => (200, "text/plain", "OK".to_string()),
            _ => match call(&sim, &dir, &me, &path, &body).await {
                Ok(v) => (200, "application/json", v.to_string()),
                Err((s, text)) => (s, "text/plain", text),
            },
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One call: the method found, the request decoded, the answer checked and encoded.
async fn call(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    path: &str,
    body: &[u8],
) -> Result<Value, (u16, String)> {
    let Some(node) = sim.node_view(me) else {
        return Err((500, "no such node".into()));
    };
    if !node.serving {
        return Err((503, "Server is stopping".into()));
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    let serves = match node.role {
        "nameserver" => service.ends_with("NameServer"),
        "tablet" => service.ends_with("TabletServer"),
        _ => false,
    };
    let method = proto::method(service, name)
        .filter(|_| serves)
        .ok_or_else(|| {
            (
                404,
                format!("Fail to find method={name} of service={service}"),
            )
        })?;
    let json: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| (400, format!("Fail to parse http body as json: {e}")))?
    };
    let req = proto::from_json(&method.input(), &json)
        .map_err(|e| (400, format!("Fail to parse http body as request: {e}")))?;
    let reply = match node.role {
        "nameserver" => crate::nameserver::answer(sim, dir, me, name, &req).await,
        _ => crate::tablet::answer(sim, dir, me, name, &req).await,
    };
    match reply {
        Reply::Http(s, t) => Err((s, t)),
        Reply::Message(v) => proto::answer(&method, &v)
            .map(|m| proto::to_json(&m))
            .map_err(|e| {
                (
                    500,
                    format!(
                        "the emulator's own answer is not a {}: {e}",
                        method.output().full_name()
                    ),
                )
            }),
    }
}
