//! The HTTP/JSON shapes of the RPCs, written from `src/proto/name_server.proto` and
//! `src/proto/tablet.proto`, and what each kind of answer becomes, against a local HTTP server
//! that answers like brpc.

use std::time::Duration;

use rollout_core::ErrorClass;
use rollout_openmldb::OpenMldbError;
use rollout_openmldb::api::{
    ChangeLeaderRequest, ChangeRoleRequest, ConfSetRequest, Endpoint, GetTableFollowerResponse,
    Pair, RecoverEndpointRequest, ShowOpStatusRequest, ShowOpStatusResponse, ShowTableRequest,
    ShowTableResponse, ShowTabletResponse, Status, code,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn requests_use_the_protos_field_names_and_enum_names() {
    let v = |x: &dyn erased::Ser| x.json();
    assert_eq!(
        v(&ChangeLeaderRequest {
            name: "t1".into(),
            pid: 3,
            candidate_leader: "10.0.0.2:10921".into(),
            db: "db1".into(),
        }),
        json!({"name": "t1", "pid": 3, "candidate_leader": "10.0.0.2:10921", "db": "db1"})
    );
    assert_eq!(
        v(&ConfSetRequest {
            conf: Pair {
                key: "auto_failover".into(),
                value: "false".into()
            }
        }),
        json!({"conf": {"key": "auto_failover", "value": "false"}})
    );
    assert_eq!(
        v(&RecoverEndpointRequest {
            endpoint: "e:1".into(),
            need_restore: false,
            concurrency: Some(8)
        }),
        json!({"endpoint": "e:1", "need_restore": false, "concurrency": 8})
    );
    assert_eq!(
        v(&ChangeRoleRequest {
            tid: 5,
            pid: 1,
            mode: "kTableFollower",
            term: None,
            replicas: vec![]
        }),
        json!({"tid": 5, "pid": 1, "mode": "kTableFollower"})
    );
    assert_eq!(
        v(&ShowTableRequest { show_all: true }),
        json!({"show_all": true})
    );
    assert_eq!(
        v(&ShowOpStatusRequest {
            name: Some("t1".into()),
            pid: Some(0),
            db: None,
            op_id: None,
        }),
        json!({"name": "t1", "pid": 0})
    );
}

mod erased {
    pub(crate) trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn responses_parse_with_absent_fields_at_their_proto_defaults() {
    let t: ShowTableResponse = serde_json::from_value(json!({
        "code": 0, "msg": "ok",
        "table_info": [{"name": "t1", "db": "db1", "tid": 7, "replica_num": 3,
            "table_partition": [{"pid": 0,
                "partition_meta": [
                    {"endpoint": "a:1", "is_leader": true, "offset": 10},
                    {"endpoint": "b:1", "is_leader": false, "is_alive": false}],
                "term_offset": [{"term": 1, "offset": 0}]}]}]
    }))
    .unwrap();
    let metas = &t.table_info[0].table_partition[0].partition_meta;
    assert!(
        metas[0].is_alive,
        "absent is_alive is the proto default, true"
    );
    assert!(!metas[1].is_alive);
    assert_eq!(metas[1].offset, 0);
    let tablets: ShowTabletResponse = serde_json::from_value(json!({
        "code": 0, "tablets": [{"endpoint": "a:1", "state": "kHealthy", "age": 12}]
    }))
    .unwrap();
    assert_eq!(tablets.tablets[0].state, "kHealthy");
    let ops: ShowOpStatusResponse = serde_json::from_value(json!({
        "code": 0, "op_status": [{"op_id": 9, "op_type": "kRecoverTableOP", "status": "kDoing",
            "name": "t1", "pid": 0, "db": "db1", "start_time": 1, "end_time": 0, "task_type": "kRecoverTable"}]
    }))
    .unwrap();
    assert!(!ops.op_status[0].finished());
    let f: GetTableFollowerResponse = serde_json::from_value(json!({
        "code": 0, "offset": 42, "follower_info": [{"endpoint": "b:1", "offset": 41}]
    }))
    .unwrap();
    assert_eq!(f.follower_info[0].offset + 1, f.offset);
}

/// A one-request HTTP server answering `status` and `body`; returns its address and the
/// request it received.
async fn answer_once(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    (addr, task)
}

#[tokio::test]
async fn every_request_carries_the_service_token_and_goes_to_service_and_method() {
    let (addr, seen) = answer_once("200 OK", r#"{"code":0,"msg":"ok","tablets":[]}"#).await;
    let e = Endpoint::new(&addr, Duration::from_secs(5));
    let r: ShowTabletResponse = e
        .call("NameServer", "ShowTablet", &json!({}))
        .await
        .unwrap();
    assert!(r.tablets.is_empty());
    let req = seen.await.unwrap();
    assert!(
        req.starts_with("POST /NameServer/ShowTablet HTTP/1.1"),
        "{req}"
    );
    assert!(
        req.to_ascii_lowercase().contains("authorization: sdefault"),
        "{req}"
    );
}

#[tokio::test]
async fn a_standby_nameserver_is_transient_and_asks_for_rediscovery() {
    let (addr, _) = answer_once("200 OK", r#"{"code":300,"msg":"nameserver is not leader"}"#).await;
    let e = Endpoint::new(&addr, Duration::from_secs(5));
    let err = e
        .call::<_, Status>("NameServer", "ConfGet", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        OpenMldbError::App {
            code: code::NAMESERVER_IS_NOT_LEADER,
            ..
        }
    ));
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.rediscover());
    assert!(
        err.to_string().contains(&addr) && err.to_string().contains("ConfGet"),
        "{err}"
    );
}

#[tokio::test]
async fn framework_errors_garbage_and_silence_are_named_and_classed() {
    let (addr, _) = answer_once("404 Not Found", "Fail to find method=ShowTablez").await;
    let err = Endpoint::new(&addr, Duration::from_secs(5))
        .call::<_, Status>("NameServer", "ShowTablez", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OpenMldbError::Http { status: 404, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);

    let (addr, _) = answer_once("503 Service Unavailable", "Server is stopping").await;
    let err = Endpoint::new(&addr, Duration::from_secs(5))
        .call::<_, Status>("NameServer", "ShowTablet", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");

    let (addr, _) = answer_once("200 OK", "<html>not json</html>").await;
    let err = Endpoint::new(&addr, Duration::from_secs(5))
        .call::<_, ShowTabletResponse>("NameServer", "ShowTablet", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenMldbError::BadBody { .. }), "{err}");
    assert!(err.to_string().contains("not json"), "{err}");

    let (addr, _) = answer_once("200 OK", r#"{"code":301,"msg":"auto_failover is enabled"}"#).await;
    let err = Endpoint::new(&addr, Duration::from_secs(5))
        .call::<_, Status>("NameServer", "ChangeLeader", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");

    // Nothing listens: refused at once, transient.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let err = Endpoint::new(&addr, Duration::from_secs(5))
        .call::<_, Status>("TabletServer", "GetTableStatus", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenMldbError::Transport { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
}
