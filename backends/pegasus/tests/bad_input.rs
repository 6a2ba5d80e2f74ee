//! Bad input from servers and operators: a clear error naming the server and the step, no
//! panic, nothing changed.

use std::net::SocketAddr;
use std::time::Duration;

use rollout_pegasus::frame::{self, Payload};
use rollout_pegasus::messages::{ClusterInfoResponse, Empty, ErrResponse, Message, rpc};
use rollout_pegasus::meta::{MetaClient, MetaError};
use rollout_pegasus::transport::{CallError, Connection};
use rollout_pegasus::types::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that reads one request and answers `answer(seqid)`, then closes.
async fn fake(answer: impl Fn(i32) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = [0u8; 48];
            if s.read_exact(&mut head).await.is_err() {
                continue;
            }
            let body_len = frame::v0_body_len(&head).unwrap();
            let mut body = vec![0u8; body_len];
            if s.read_exact(&mut body).await.is_err() {
                continue;
            }
            let req = frame::read_request(&head, &body).unwrap();
            let _ = s.write_all(&answer(req.seqid)).await;
        }
    });
    addr
}

const T: Duration = Duration::from_secs(2);

async fn call(addr: SocketAddr) -> Result<ClusterInfoResponse, CallError> {
    Connection::new(addr)
        .call::<_, ClusterInfoResponse>(rpc::CLUSTER_INFO, &Empty, T)
        .await
}

#[tokio::test]
async fn garbage_from_a_server_is_an_error_naming_it() {
    let addr = fake(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await;
    let err = call(addr).await.unwrap_err().to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains(rpc::CLUSTER_INFO),
        "{err}"
    );
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_not_a_hang() {
    let addr = fake(|seqid| {
        let full = frame::encode_response(rpc::CLUSTER_INFO, seqid, "ERR_OK", Payload::None);
        full[..full.len() - 3].to_vec()
    })
    .await;
    let err = call(addr).await.unwrap_err();
    assert!(matches!(err, CallError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let addr = fake(|_| u32::MAX.to_be_bytes().to_vec()).await;
    let err = call(addr).await.unwrap_err().to_string();
    assert!(err.contains("response frame"), "{err}");
}

#[tokio::test]
async fn an_answer_to_another_rpc_is_refused() {
    let addr = fake(|seqid| {
        frame::encode_response(
            rpc::LIST_NODES,
            seqid,
            "ERR_OK",
            Payload::Struct(&|w| {
                ErrResponse {
                    err: Some(ErrorCode::ok()),
                }
                .write(w)
            }),
        )
    })
    .await;
    let err = call(addr).await.unwrap_err().to_string();
    assert!(err.contains("RPC_CM_LIST_NODES_ACK"), "{err}");
}

#[tokio::test]
async fn an_rpc_layer_error_is_named() {
    let addr = fake(|seqid| {
        frame::encode_response(
            rpc::CLUSTER_INFO,
            seqid,
            "ERR_HANDLER_NOT_FOUND",
            Payload::None,
        )
    })
    .await;
    let err = call(addr).await.unwrap_err().to_string();
    assert!(err.contains("ERR_HANDLER_NOT_FOUND"), "{err}");
}

#[tokio::test]
async fn an_unknown_application_error_name_is_passed_on_by_name() {
    let addr = fake(|seqid| {
        frame::encode_response(
            rpc::CLUSTER_INFO,
            seqid,
            "ERR_OK",
            Payload::Struct(&|w| {
                ClusterInfoResponse {
                    err: Some(ErrorCode::new("ERR_SOMETHING_NEW")),
                    ..ClusterInfoResponse::default()
                }
                .write(w)
            }),
        )
    })
    .await;
    let meta = MetaClient::new(&[addr], T);
    let err = meta
        .call::<_, ClusterInfoResponse>(rpc::CLUSTER_INFO, &Empty)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::App { .. }), "{err}");
    assert!(err.to_string().contains("ERR_SOMETHING_NEW"), "{err}");
}

#[tokio::test]
async fn an_unreachable_meta_list_names_every_meta() {
    // Two ports nobody listens on.
    let a = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let b = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let meta = MetaClient::new(&[a, b], T);
    let err = meta
        .call::<_, ClusterInfoResponse>(rpc::CLUSTER_INFO, &Empty)
        .await
        .unwrap_err();
    // Unreachable, not an election: connecting does not wait for a leader to appear.
    assert!(matches!(err, MetaError::Unreachable { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains(&a.to_string()) && err.contains(&b.to_string()),
        "{err}"
    );
    assert!(
        err.contains("no meta server answers as the leader"),
        "{err}"
    );
}

#[tokio::test]
async fn standbys_that_all_forward_are_no_leader() {
    let forward = |seqid| {
        frame::encode_response(
            rpc::CLUSTER_INFO,
            seqid,
            "ERR_OK",
            Payload::Struct(&|w| {
                ClusterInfoResponse {
                    err: Some(ErrorCode::new("ERR_FORWARD_TO_OTHERS")),
                    ..ClusterInfoResponse::default()
                }
                .write(w)
            }),
        )
    };
    let a = fake(forward).await;
    let b = fake(forward).await;
    let meta = MetaClient::new(&[a, b], T);
    let err = meta
        .call::<_, ClusterInfoResponse>(rpc::CLUSTER_INFO, &Empty)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::NoLeader { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("ERR_FORWARD_TO_OTHERS"), "{err}");
}
