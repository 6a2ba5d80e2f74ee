//! What the RPC layer answers before any handler runs: a collector never registers the CLI
//! handler, and a meta or replica server that is starting has registered none yet; both get
//! `ERR_HANDLER_NOT_FOUND` (`rpc_engine::on_recv_request` @v2.5.0), never an application
//! answer.

use std::net::SocketAddr;
use std::time::Duration;

use rollout_core::{Node, NodeId};
use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_pegasus::messages::{Command, I32Request, ListResponse, NodeInfo, rpc};
use rollout_pegasus::transport::{CallError, Connection};
use rollout_sim::{Flavor, SimBuilder};

const SCALE: u32 = 50;
const T: Duration = Duration::from_secs(1);

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn builder() -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).time_scale(SCALE);
    b
}

async fn cli(server: SocketAddr, cmd: &str) -> Result<String, CallError> {
    let req = Command {
        cmd: cmd.into(),
        arguments: Vec::new(),
    };
    Connection::new(server).call_string(rpc::CLI, &req, T).await
}

fn rpc_error(r: &Result<impl std::fmt::Debug, CallError>) -> Option<&str> {
    match r {
        Err(CallError::Rpc { error, .. }) => Some(error.as_str()),
        _ => None,
    }
}

/// A bare HTTP/1.1 GET's status line.
async fn http_status(a: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_answers_the_cli_with_handler_not_found_and_http_with_its_start() {
    let _serial = serial().await;
    for version in ServerVersion::ALL {
        let emu = Emulator::start(&builder(), version).await.unwrap();
        let collector = emu.collectors()[0];
        let r = cli(collector, "server-info").await;
        assert_eq!(
            rpc_error(&r),
            Some("ERR_HANDLER_NOT_FOUND"),
            "{version}: {r:?}"
        );
        for path in ["/version", "/recentStartTime"] {
            let status = http_status(collector, path).await;
            assert!(status.contains(" 200 "), "{version} {path}: {status}");
        }
        // The meta and the replica server do have the handler.
        assert!(
            cli(emu.metas()[0], "server-info").await.is_ok(),
            "{version}"
        );
        let replica = emu.role_addrs("replica")[0];
        assert!(cli(replica, "server-info").await.is_ok(), "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_that_is_starting_has_no_handler_for_meta_rpcs_nor_the_cli() {
    let _serial = serial().await;
    let mut b = builder();
    // A start that lasts ten emulated minutes: twelve seconds of wall time to look at it.
    b.fault("slow-start:node=meta-2:34601,extra=600".parse().unwrap());
    let emu = Emulator::start(&b, ServerVersion::default()).await.unwrap();
    let meta = emu.metas()[1];
    let node = emu.node(&NodeId::new(meta.to_string())).unwrap();
    node.stop().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.status().await.unwrap().running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the meta never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.start().await.unwrap();
    // The port opens with the process: poll until something answers there.
    let listed = loop {
        let r: Result<ListResponse<NodeInfo>, CallError> = Connection::new(meta)
            .call(rpc::LIST_NODES, &I32Request(0), T)
            .await;
        match r {
            Err(CallError::Transport { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => break other,
        }
    };
    assert!(node.status().await.unwrap().running);
    assert_eq!(
        rpc_error(&listed),
        Some("ERR_HANDLER_NOT_FOUND"),
        "{listed:?}"
    );
    let r = cli(meta, "server-info").await;
    assert_eq!(rpc_error(&r), Some("ERR_HANDLER_NOT_FOUND"), "{r:?}");
}
