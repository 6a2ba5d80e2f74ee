//! The wire format against byte vectors written by hand from docs/pegasus-wire.md
//! (not produced by this crate's encoder), round trips, and decoders fed arbitrary bytes.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use rollout_pegasus::frame::{
    self, HEADER_LEN, Payload, RequestMeta, encode_request, encode_response, read_request,
    read_response,
};
use rollout_pegasus::messages::{
    BalancerRequest, ClusterInfoResponse, Command, I32Request, ListResponse, Message, NodeInfo,
    PartitionConfiguration, ProposalAction, QueryConfigRequest, QueryConfigResponse, rpc,
};
use rollout_pegasus::thrift::{Reader, Writer};
use rollout_pegasus::types::{ErrorCode, Gpid, HostPort, RpcAddress};

fn bytes_of(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    f(&mut w);
    w.into_bytes()
}

#[test]
fn gpid_is_one_i64_with_the_app_id_low_and_the_partition_index_high() {
    let g = Gpid::new(1, 3);
    assert_eq!(bytes_of(|w| g.write(w)), [0, 0, 0, 3, 0, 0, 0, 1]);
    assert_eq!(
        Gpid::read(&mut Reader::new(&[0, 0, 0, 3, 0, 0, 0, 1])).unwrap(),
        g
    );
    assert_eq!(g.to_string(), "1.3");
    // A negative app id (ddd_diagnose's -1 = all) survives the round trip.
    let all = Gpid::new(-1, -1);
    assert_eq!(Gpid::from_raw(all.to_raw()), all);
}

#[test]
fn rpc_address_is_ip_port_and_type_in_one_i64() {
    let a = RpcAddress::new(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 34601));
    // 127.0.0.1 = 7f000001, 34601 = 0x8729, type IPv4 = 1.
    let golden = [0x7f, 0, 0, 1, 0x87, 0x29, 0, 1];
    assert_eq!(bytes_of(|w| a.write(w)), golden);
    assert_eq!(RpcAddress::read(&mut Reader::new(&golden)).unwrap(), a);
    // No address is the i64 0; a type other than IPv4 reads as none.
    assert_eq!(bytes_of(|w| RpcAddress::none().write(w)), [0; 8]);
    assert_eq!(
        RpcAddress::from_raw(0x7f00_0001_8729_0002),
        RpcAddress::none()
    );
}

#[test]
fn host_port_is_a_string_an_i16_and_an_i8_with_no_struct_framing() {
    let h = HostPort::new("localhost", 34601);
    let mut golden = vec![0, 0, 0, 9];
    golden.extend_from_slice(b"localhost");
    golden.extend_from_slice(&[0x87, 0x29, 1]);
    assert_eq!(bytes_of(|w| h.write(w)), golden);
    assert_eq!(HostPort::read(&mut Reader::new(&golden)).unwrap(), h);
    // Type 0 is an invalid host_port whatever its text.
    let mut invalid = golden.clone();
    *invalid.last_mut().unwrap() = 0;
    assert!(
        !HostPort::read(&mut Reader::new(&invalid))
            .unwrap()
            .is_valid()
    );
}

#[test]
fn error_code_is_a_bare_string() {
    let mut golden = vec![0, 0, 0, 6];
    golden.extend_from_slice(b"ERR_OK");
    assert_eq!(bytes_of(|w| ErrorCode::ok().write(w)), golden);
    assert!(ErrorCode::read(&mut Reader::new(&golden)).unwrap().is_ok());
}

#[test]
fn the_v0_request_header_is_48_bytes_as_the_reference_lays_it_out() {
    let meta = RequestMeta {
        gpid: Gpid::new(2, 5),
        timeout_ms: 1000,
        partition_hash: 0x0102_0304_0506_0708,
    };
    let bytes = encode_request(rpc::LIST_NODES, 7, meta, |w| I32Request(0).write(w));
    let mut golden: Vec<u8> = b"THFT".to_vec();
    let be = |v: u32| v.to_be_bytes();
    let body_len = (bytes.len() - HEADER_LEN) as u32;
    for v in [0, 48, 0, body_len, 0, 2, 5, 1000, 2 * 7919 + 5] {
        golden.extend_from_slice(&be(v));
    }
    golden.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    assert_eq!(&bytes[..HEADER_LEN], &golden[..]);
    // The body: a strict CALL named by the RPC code, the args struct's field 1 holding the
    // request (one i32 field 1 = 0), the request's STOP, the args' STOP.
    let mut body = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 17];
    body.extend_from_slice(b"RPC_CM_LIST_NODES");
    body.extend_from_slice(&[0, 0, 0, 7]);
    body.extend_from_slice(&[12, 0, 1, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[HEADER_LEN..], &body[..]);
    // The server side reads it back.
    let head: [u8; 16] = bytes[..16].try_into().unwrap();
    assert_eq!(frame::request_lengths(&head).unwrap().0, HEADER_LEN);
    assert_eq!(
        frame::v0_body_len(&bytes[..HEADER_LEN]).unwrap(),
        body.len()
    );
    let req = read_request(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..]).unwrap();
    assert_eq!(
        (req.rpc.as_str(), req.seqid, req.meta),
        (rpc::LIST_NODES, 7, meta)
    );
    assert_eq!(I32Request::from_bytes(&req.body).unwrap(), I32Request(0));
}

#[test]
fn the_response_frame_has_its_length_the_error_name_and_the_ack() {
    let resp = ListResponse {
        err: Some(ErrorCode::ok()),
        infos: vec![NodeInfo {
            status: 1,
            node: RpcAddress::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 34801)),
            hp_node: Some(HostPort::new("127.0.0.1", 34801)),
        }],
    };
    let bytes = encode_response(
        rpc::LIST_NODES,
        9,
        "ERR_OK",
        Payload::Struct(&|w| resp.write(w)),
    );
    assert_eq!(
        u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
        bytes.len()
    );
    let mut head = vec![0, 0, 0, 6];
    head.extend_from_slice(b"ERR_OK");
    head.extend_from_slice(&[0x80, 0x01, 0x00, 0x02, 0, 0, 0, 21]);
    head.extend_from_slice(b"RPC_CM_LIST_NODES_ACK");
    head.extend_from_slice(&[0, 0, 0, 9, 12, 0, 0]);
    assert_eq!(&bytes[4..4 + head.len()], &head[..]);
    let r = read_response(&bytes[4..]).unwrap();
    assert_eq!((r.error.as_str(), r.seqid), ("ERR_OK", 9));
    let (_, body) = r.result.unwrap();
    assert_eq!(ListResponse::<NodeInfo>::from_bytes(&body).unwrap(), resp);
    // An RPC-layer error carries no body.
    let err = encode_response(rpc::LIST_NODES, 9, "ERR_HANDLER_NOT_FOUND", Payload::None);
    let r = read_response(&err[4..]).unwrap();
    assert_eq!(r.error, "ERR_HANDLER_NOT_FOUND");
    assert!(r.result.is_none());
    // A remote command's answer is a bare string in field 0.
    let cli = encode_response(rpc::CLI, 1, "ERR_OK", Payload::String("OK"));
    let r = read_response(&cli[4..]).unwrap();
    let (ty, body) = r.result.unwrap();
    assert_eq!(ty, rollout_pegasus::thrift::Type::String);
    assert_eq!(Reader::new(&body).string().unwrap(), "OK");
}

fn addr(port: u16) -> RpcAddress {
    RpcAddress::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), port))
}

#[test]
fn every_message_round_trips() {
    let pc = PartitionConfiguration {
        pid: Gpid::new(1, 7),
        ballot: 12,
        max_replica_count: 3,
        primary: addr(1),
        secondaries: vec![addr(2), addr(3)],
        last_drops: vec![addr(4)],
        last_committed_decree: 99,
        partition_flags: 0,
        hp_primary: Some(HostPort::new("a", 1)),
        hp_secondaries: Some(vec![HostPort::new("b", 2)]),
        hp_last_drops: Some(vec![HostPort::new("c", 4)]),
    };
    let q = QueryConfigResponse {
        err: Some(ErrorCode::new("ERR_FORWARD_TO_OTHERS")),
        app_id: 1,
        partition_count: 8,
        is_stateful: true,
        partitions: vec![pc.clone(), PartitionConfiguration::default()],
    };
    assert_eq!(QueryConfigResponse::from_bytes(&q.to_bytes()).unwrap(), q);
    let req = QueryConfigRequest {
        app_name: "temp".into(),
        partition_indices: vec![0, 5],
    };
    assert_eq!(
        QueryConfigRequest::from_bytes(&req.to_bytes()).unwrap(),
        req
    );
    let b = BalancerRequest {
        gpid: Gpid::new(1, 2),
        action_list: vec![ProposalAction {
            target: addr(1),
            node: addr(2),
            kind: 2,
            hp_target: Some(HostPort::new("a", 1)),
            hp_node: Some(HostPort::new("b", 2)),
        }],
        force: Some(false),
        balance_type: Some(0),
    };
    assert_eq!(BalancerRequest::from_bytes(&b.to_bytes()).unwrap(), b);
    let c = ClusterInfoResponse {
        err: Some(ErrorCode::ok()),
        keys: vec!["meta_servers".into(), "primary_meta_server".into()],
        values: vec!["a,b".into(), "a".into()],
    };
    let back = ClusterInfoResponse::from_bytes(&c.to_bytes()).unwrap();
    assert_eq!(back.get("primary_meta_server"), Some("a"));
    let cmd = Command {
        cmd: "replica.kill_partition".into(),
        arguments: vec!["1".into(), "3".into()],
    };
    assert_eq!(Command::from_bytes(&cmd.to_bytes()).unwrap(), cmd);
}

#[test]
fn unknown_fields_are_skipped_and_a_known_field_of_the_wrong_type_is_named() {
    // A node_info with an extra field 9 (a list of strings) before its known ones.
    let mut w = Writer::new();
    w.field(rollout_pegasus::thrift::Type::List, 9);
    w.list(rollout_pegasus::thrift::Type::String, 1);
    w.string("future");
    NodeInfo::default().write(&mut w);
    w.stop();
    assert_eq!(
        NodeInfo::from_bytes(&w.into_bytes()).unwrap(),
        NodeInfo::default()
    );
    // Field 1 (status) as a string.
    let mut w = Writer::new();
    w.field(rollout_pegasus::thrift::Type::String, 1);
    w.string("ALIVE");
    w.stop();
    let err = NodeInfo::from_bytes(&w.into_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("field 1 of node_info"), "{err}");
}

#[test]
fn an_update_request_and_a_replica_list_match_bytes_written_from_the_idl() {
    // update_request: 1 blob key (header STRUCT, payload a binary), 2 blob value, 3 i32.
    let mut golden = vec![12, 0, 1, 0, 0, 0, 2, b'k', b'1', 12, 0, 2, 0, 0, 0, 1, b'v'];
    golden.extend_from_slice(&[8, 0, 3, 0, 0, 0, 0, 0]);
    let u = rollout_pegasus::rrdb::UpdateRequest {
        key: b"k1".to_vec(),
        value: b"v".to_vec(),
        expire_ts_seconds: 0,
    };
    assert_eq!(u.to_bytes(), golden);
    // query_replica_info_response: 1 error_code, 2 list of replica_info {1 gpid, 3 status}.
    let mut golden = vec![12, 0, 1, 0, 0, 0, 6];
    golden.extend_from_slice(b"ERR_OK");
    golden.extend_from_slice(&[15, 0, 2, 12, 0, 0, 0, 1]);
    golden.extend_from_slice(&[12, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1]);
    golden.extend_from_slice(&[10, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9]); // ballot, skipped
    golden.extend_from_slice(&[8, 0, 3, 0, 0, 0, 1, 0, 0]);
    let r = rollout_pegasus::messages::QueryReplicaInfoResponse::from_bytes(&golden).unwrap();
    assert_eq!(r.replicas, vec![(Gpid::new(1, 5), 1)]);
}

#[test]
fn oversized_and_garbage_frames_are_refused_before_allocating() {
    assert!(frame::response_len(u32::MAX.to_be_bytes()).is_err());
    assert!(frame::response_len([0, 0, 0, 2]).is_err());
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(b"HTTP");
    let err = frame::request_lengths(&head).unwrap_err().to_string();
    assert!(err.contains("THFT"), "{err}");
    // A list claiming two billion elements in a ten-byte input.
    let bytes = [15u8, 8, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert!(
        Reader::new(&bytes)
            .skip(rollout_pegasus::thrift::Type::List)
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// No input makes a decoder panic or read past its end.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_response(&bytes);
        let _ = read_request(&bytes[..bytes.len().min(48)], &bytes[bytes.len().min(48)..]);
        let _ = QueryConfigResponse::from_bytes(&bytes);
        let _ = ListResponse::<NodeInfo>::from_bytes(&bytes);
        let _ = BalancerRequest::from_bytes(&bytes);
        let _ = ClusterInfoResponse::from_bytes(&bytes);
        let _ = rollout_pegasus::messages::QueryReplicaInfoResponse::from_bytes(&bytes);
        let _ = rollout_pegasus::rrdb::UpdateRequest::from_bytes(&bytes);
        let _ = rollout_pegasus::rrdb::DataResponse::read_update(&mut Reader::new(&bytes));
        let _ = rollout_pegasus::rrdb::DataResponse::read_read(&mut Reader::new(&bytes), false);
        if bytes.len() >= 16 {
            let _ = frame::request_lengths(&bytes[..16].try_into().unwrap());
        }
        for ty in [rollout_pegasus::thrift::Type::Struct, rollout_pegasus::thrift::Type::List,
                   rollout_pegasus::thrift::Type::Map] {
            let _ = Reader::new(&bytes).skip(ty);
        }
    }

    /// Any partition configuration survives a round trip.
    #[test]
    fn partition_configurations_round_trip(
        app in any::<i32>(), idx in any::<i32>(), ballot in any::<i64>(),
        ports in proptest::collection::vec(1u16.., 0..5),
    ) {
        let pc = PartitionConfiguration {
            pid: Gpid::new(app, idx),
            ballot,
            max_replica_count: 3,
            primary: ports.first().map_or(RpcAddress::none(), |&p| addr(p)),
            secondaries: ports.iter().skip(1).map(|&p| addr(p)).collect(),
            ..PartitionConfiguration::default()
        };
        prop_assert_eq!(PartitionConfiguration::from_bytes(&pc.to_bytes()).unwrap(), pc);
    }
}
