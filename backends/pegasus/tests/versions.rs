//! The version a server reports decides whether the backend speaks to it at all: a version
//! outside 2.4, 2.5 and master, or an answer that names none, is refused before anything
//! is touched, naming the server and what it said.

use std::net::SocketAddr;

use rollout_core::{Change, Cluster, NodeId};
use rollout_pegasus::frame::{self, Payload};
use rollout_pegasus::messages::{
    ClusterInfoResponse, Command, ListResponse, Message, NodeInfo, rpc,
};
use rollout_pegasus::types::ErrorCode;
use rollout_pegasus::{PegasusCluster, PegasusError, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A meta that leads, lists no replica server, and answers remote commands with `say`.
async fn fake_meta(say: fn(&str) -> String) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = [0u8; 48];
                    if s.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let Ok(n) = frame::v0_body_len(&head) else {
                        return;
                    };
                    let mut body = vec![0u8; n];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let req = frame::read_request(&head, &body).unwrap();
                    let ok = Some(ErrorCode::ok());
                    let answer = match req.rpc.as_str() {
                        rpc::CLUSTER_INFO => {
                            let r = ClusterInfoResponse {
                                err: ok,
                                keys: vec!["cluster_name".into()],
                                values: vec!["fake".into()],
                            };
                            frame::encode_response(
                                &req.rpc,
                                req.seqid,
                                "ERR_OK",
                                Payload::Struct(&|w| r.write(w)),
                            )
                        }
                        rpc::LIST_NODES => {
                            let r = ListResponse::<NodeInfo> {
                                err: ok,
                                infos: Vec::new(),
                            };
                            frame::encode_response(
                                &req.rpc,
                                req.seqid,
                                "ERR_OK",
                                Payload::Struct(&|w| r.write(w)),
                            )
                        }
                        rpc::CLI => {
                            let c = Command::from_bytes(&req.body).unwrap();
                            let text = say(&c.cmd);
                            frame::encode_response(
                                &req.rpc,
                                req.seqid,
                                "ERR_OK",
                                Payload::String(&text),
                            )
                        }
                        _ => frame::encode_response(
                            &req.rpc,
                            req.seqid,
                            "ERR_HANDLER_NOT_FOUND",
                            Payload::None,
                        ),
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// No process handle: these tests touch no process.
#[derive(Debug)]
enum NoNode {}

impl rollout_core::Node for NoNode {
    type Error = std::io::Error;
    fn id(&self) -> &NodeId {
        match *self {}
    }
    async fn stop(&self) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn start(&self) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn status(&self) -> Result<rollout_core::NodeStatus, Self::Error> {
        match *self {}
    }
    async fn apply(&self, _: &Change) -> Result<rollout_core::ApplyRecord, Self::Error> {
        match *self {}
    }
    async fn revert(&self, _: &rollout_core::ApplyRecord) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn is_applied(&self, _: &Change) -> Result<bool, Self::Error> {
        match *self {}
    }
}

type Factory = fn(&NodeId) -> Option<NoNode>;

async fn connect(meta: SocketAddr) -> Result<PegasusCluster<Factory>, PegasusError> {
    let none: Factory = |_| None;
    PegasusCluster::connect(&[meta], &[], none, Timing::default().scaled(5)).await
}

#[tokio::test]
async fn a_server_of_an_unsupported_version_is_refused_naming_it() {
    let meta = fake_meta(|cmd| match cmd {
        "server-info" => {
            "Pegasus Server 2.3.0 (1a2b3c) Release, Started at 2024-01-01 00:00:00".into()
        }
        _ => "OK".into(),
    })
    .await;
    let err = connect(meta).await.unwrap_err();
    assert!(matches!(err, PegasusError::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&meta.to_string()), "{msg}");
    assert!(msg.contains("Pegasus 2.3.0 is not supported"), "{msg}");
    assert!(msg.contains("2.4, 2.5 and master"), "{msg}");
}

#[tokio::test]
async fn a_server_that_names_no_version_is_refused_quoting_it() {
    let meta = fake_meta(|cmd| match cmd {
        "server-info" => "I am a teapot".into(),
        _ => "OK".into(),
    })
    .await;
    let msg = connect(meta).await.unwrap_err().to_string();
    assert!(
        msg.contains("names no Pegasus version") && msg.contains("teapot"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_knob_answer_in_neither_style_is_an_error_quoting_the_server() {
    let meta = fake_meta(|cmd| match cmd {
        "server-info" => {
            "Pegasus Server 2.5.0 (0ca31b70) Release, Started at 2024-01-01 00:00:00".into()
        }
        "meta.lb.assign_delay_ms" => "well, about an hour".into(),
        _ => "OK".into(),
    })
    .await;
    let cluster = connect(meta).await.unwrap();
    assert_eq!(cluster.server_version().unwrap().to_string(), "2.5.0");
    let msg = cluster
        .read_knob("meta.lb.assign_delay_ms")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&meta.to_string()) && msg.contains("neither reply style"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_upgrade_off_the_upstream_paths_is_refused_before_anything_is_touched() {
    let meta = fake_meta(|cmd| match cmd {
        "server-info" => {
            "Pegasus Server 2.5.0 (0ca31b70) Release, Started at 2024-01-01 00:00:00".into()
        }
        _ => "OK".into(),
    })
    .await;
    let cluster = connect(meta).await.unwrap();
    let to = |v: &str| Change::Upgrade {
        version: v.to_string(),
    };
    assert!(cluster.check_change(&to("2.5.1")).is_ok());
    let refused = |v: &str| match cluster.check_change(&to(v)).unwrap_err() {
        rollout_core::ChangeError::Version { version, reason } => {
            assert_eq!(version, v);
            reason
        }
        other => panic!("not a version refusal: {other:?}"),
    };
    let down = refused("2.4.0");
    assert!(down.contains("downgrade"), "{down}");
    let master = refused("2.6.0-SNAPSHOT");
    assert!(master.contains("not a supported rolling path"), "{master}");
    let junk = refused("latest");
    assert!(junk.contains("not a Pegasus version"), "{junk}");
}
