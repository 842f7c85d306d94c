//! The wire format, byte for byte: one frame of every message kind, encoded
//! and compared with the bytes this version of the protocol puts on the
//! wire. A change to a message's Rust shape (a struct instead of inline
//! fields, a field renamed) must not change these bytes; a change that does
//! is a new protocol version, and this test is where it shows.

use std::net::SocketAddr;

use bytes::Bytes;
use overlay_proto::coord::Coord;
use overlay_proto::frame;
use overlay_proto::keys::Ed25519Signer;
use overlay_proto::keys::Signer;
use overlay_proto::lan::GroupKey;
use overlay_proto::lineage::{Lineage, Mandate};
use overlay_proto::message::{
    Asked, Collect, Collected, Data, Direct, Fetch, Heartbeat, Join, JoinAck, JoinOverlay,
    JoinReject, LanFed, Lost, Neighbours, NotRoot, Offer, Place, Publish, PublishAck,
    PublishReject, ReplicaAck, ReplicaSync, Splice, TreeQuery, TreeReply,
};
use overlay_proto::proof::Proof;
use overlay_proto::{Detour, Message, Mid, NodeId, NodeInfo, RejectReason, TreeEntry};

fn node(id: u128, port: u16) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn coord() -> Coord {
    Coord {
        pos: [1.5, -2.0, 0.25, 3.0],
        height: 0.5,
        error: 0.75,
    }
}

const MID: Mid = Mid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);

fn data() -> Data {
    Data::new(MID, 3, 42, NodeId(7), 9, Bytes::from_static(b"hello"))
}

/// One message of every kind, with every optional field set in one of them
/// at least.
fn messages() -> Vec<Message> {
    let a = node(0xaaaa, 4000);
    let b = node(0xbbbb, 4001);
    let entry = TreeEntry {
        node: a,
        parent: Some(NodeId(0xbbbb)),
        member: true,
        responded: false,
        island: Some(NodeId(5)),
        fed: true,
    };
    vec![
        Message::JoinOverlay(JoinOverlay { joiner: a }),
        Message::Neighbours(Neighbours {
            nodes: vec![a, b],
            reply: true,
            coord: coord(),
        }),
        Message::Join(Join {
            mid: MID,
            joiner: a,
            want: Some(17),
            detour: Detour::boxed(Some(NodeId(3)), None),
            coord: coord(),
            moving: true,
            nonce: 0x0102_0304_0506_0708,
        }),
        Message::Join(Join {
            mid: MID,
            joiner: b,
            want: None,
            detour: None,
            coord: coord(),
            moving: false,
            nonce: 5,
        }),
        Message::LanFed(LanFed {
            mid: MID,
            fed: true,
        }),
        Message::JoinAck(JoinAck {
            mid: MID,
            next: 11,
            epoch: 2,
            path: vec![NodeId(1), NodeId(2)],
            delay_us: 1234,
            coord: coord(),
            key: Some(Box::new(GroupKey::from_bytes([7; 32]))),
            nonce: 0x0102_0304_0506_0708,
        }),
        Message::Place(Place {
            mid: MID,
            node: a,
            coord: coord(),
            budget_us: Some(5000),
            nonce: 99,
        }),
        Message::PlaceOffer(Offer {
            mid: MID,
            delay_us: 300,
            edge_us: 200,
            budget_us: None,
            nonce: 99,
        }),
        Message::JoinReject(JoinReject {
            mid: MID,
            reason: RejectReason::PayloadTooLarge { limit: 1 << 20 },
        }),
        Message::Leave { mid: MID },
        Message::MoveRefused { mid: MID },
        Message::Splice(Splice {
            mid: MID,
            parent: b,
        }),
        Message::Publish(Publish {
            mid: MID,
            publisher: a,
            pub_id: 77,
            payload: Bytes::from_static(b"payload"),
        }),
        Message::PublishAck(PublishAck {
            mid: MID,
            pub_id: 77,
            seq: 100,
        }),
        Message::PublishReject(PublishReject {
            mid: MID,
            pub_id: 78,
            reason: RejectReason::Overloaded,
        }),
        Message::Data(data()),
        Message::TreeQuery(TreeQuery {
            mid: MID,
            query: 5,
            reply_to: a,
        }),
        Message::Collect(Collect {
            mid: MID,
            query: 6,
            budget_ms: 1500,
        }),
        Message::Collected(Collected {
            mid: MID,
            query: 6,
            entries: vec![entry.clone()],
        }),
        Message::Depart,
        Message::TreeReply(TreeReply {
            mid: MID,
            query: 5,
            result: Ok(vec![entry]),
        }),
        Message::TreeReply(TreeReply {
            mid: MID,
            query: 8,
            result: Err(RejectReason::UnknownGroup),
        }),
        Message::Heartbeat(Heartbeat {
            up: vec![(MID, 4)],
            down: vec![],
            replica: vec![(MID, 9)],
            coord: coord(),
        }),
        Message::Fetch(Fetch {
            mid: MID,
            from: 10,
            to: 20,
            reply_to: b,
            request: 0,
        }),
        Message::Fetched {
            request: 3,
            data: data(),
        },
        Message::Lost(Lost {
            mid: MID,
            request: 3,
            from: 1,
            to: 5,
        }),
        Message::ReplicaSync(ReplicaSync {
            mid: MID,
            epoch: 4,
            root: a,
            first: 33,
            lineage: lineage(),
            key: None,
        }),
        Message::Replicate(data()),
        Message::ReplicaAck(ReplicaAck {
            mid: MID,
            epoch: 4,
            seq: 35,
        }),
        Message::NotRoot(NotRoot {
            mid: MID,
            epoch: 5,
            root: b,
            lineage: lineage(),
        }),
        Message::Proof(std::sync::Arc::new(Proof::sign(
            &Ed25519Signer::from_seed(&[3; 32]),
            MID,
            4,
            42,
            vec![[0x11; 32], [0x22; 32]],
        ))),
        Message::Lineage(lineage()),
        Message::Direct(Direct {
            mid: MID,
            asked: Asked::Publish { pub_id: 9 },
        }),
        Message::Direct(Direct {
            mid: MID,
            asked: Asked::Fetch { request: 4 },
        }),
        Message::Direct(Direct {
            mid: MID,
            asked: Asked::Tree { query: 5 },
        }),
    ]
}

/// Two epochs: key 3 issued the group and named key 4 and node 0xbbbb;
/// key 4 leads the second epoch (the keys are made from fixed seeds, and
/// Ed25519 signatures are deterministic).
fn lineage() -> std::sync::Arc<Lineage> {
    let (three, four) = (
        Ed25519Signer::from_seed(&[3; 32]),
        Ed25519Signer::from_seed(&[4; 32]),
    );
    let successors = vec![four.public_key().id(), NodeId(0xbbbb)];
    let first = Lineage {
        mandates: vec![Mandate::sign(&three, MID, 1, 2, successors)],
    };
    let mut l = first.clone();
    l.mandates
        .push(Mandate::sign(&four, MID, 2, 1, vec![NodeId(0xbbbb)]));
    std::sync::Arc::new(l)
}

/// The frames of [`messages`], in hex, as protocol version 4 puts them on
/// the wire. Version 2 changed the version byte of every frame and added
/// [`Message::Proof`]; version 3 changed the version byte again, put a
/// lineage in place of the replica list of [`Message::ReplicaSync`] and
/// after the fields of [`Message::NotRoot`], and added
/// [`Message::Lineage`]; version 4 changed the version byte again, put a
/// nonce after the fields of [`Message::Join`], [`Message::JoinAck`],
/// [`Message::Place`] and [`Message::PlaceOffer`], and added the last kind
/// ([`Message::Direct`]); every other byte is version 1's.
const GOLDEN: &[&str] = &[
    "0000001904000000000000000000000000000000aaaa007f000001a01f",
    "0000004a0401020000000000000000000000000000aaaa007f000001a01f0000000000000000000000000000bbbb007f000001a11f010000c03f000000c00000803e000040400000003f0000403f",
    "0000006004020123456789abcdeffedcba98765432100000000000000000000000000000aaaa007f000001a01f0111010100000000000000000000000000000003000000c03f000000c00000803e000040400000003f0000403f01888e98a8c0e0808101",
    "0000004504020123456789abcdeffedcba98765432100000000000000000000000000000bbbb007f000001a11f00000000c03f000000c00000803e000040400000003f0000403f0005",
    "0000001304030123456789abcdeffedcba987654321001",
    "0000007904040123456789abcdeffedcba98765432100b02020000000000000000000000000000000100000000000000000000000000000002d2090000c03f000000c00000803e000040400000003f0000403f010707070707070707070707070707070707070707070707070707070707070707888e98a8c0e0808101",
    "0000004504050123456789abcdeffedcba98765432100000000000000000000000000000aaaa007f000001a01f0000c03f000000c00000803e000040400000003f0000403f01882763",
    "0000001804060123456789abcdeffedcba9876543210ac02c8010063",
    "0000001604070123456789abcdeffedcba987654321002808040",
    "0000001204080123456789abcdeffedcba9876543210",
    "0000001204090123456789abcdeffedcba9876543210",
    "00000029040a0123456789abcdeffedcba98765432100000000000000000000000000000bbbb007f000001a11f",
    "00000031040b0123456789abcdeffedcba98765432100000000000000000000000000000aaaa007f000001a01f4d7061796c6f6164",
    "00000014040c0123456789abcdeffedcba98765432104d64",
    "00000014040d0123456789abcdeffedcba98765432104e03",
    "0000002a040e0123456789abcdeffedcba9876543210032a000000000000000000000000000000070968656c6c6f",
    "0000002a040f0123456789abcdeffedcba9876543210050000000000000000000000000000aaaa007f000001a01f",
    "0000001504100123456789abcdeffedcba987654321006dc0b",
    "0000005004110123456789abcdeffedcba987654321006010000000000000000000000000000aaaa007f000001a01f010000000000000000000000000000bbbb0100010000000000000000000000000000000501",
    "000000020412",
    "0000005104130123456789abcdeffedcba98765432100500010000000000000000000000000000aaaa007f000001a01f010000000000000000000000000000bbbb0100010000000000000000000000000000000501",
    "0000001504130123456789abcdeffedcba9876543210080100",
    "0000003f0414010123456789abcdeffedcba98765432100400010123456789abcdeffedcba9876543210090000c03f000000c00000803e000040400000003f0000403f",
    "0000002c04150123456789abcdeffedcba98765432100a140000000000000000000000000000bbbb007f000001a11f00",
    "0000002b0416030123456789abcdeffedcba9876543210032a000000000000000000000000000000070968656c6c6f",
    "0000001504170123456789abcdeffedcba9876543210030105",
    "0000014704180123456789abcdeffedcba9876543210040000000000000000000000000000aaaa007f000001a01f21020123456789abcdeffedcba9876543210010202d016df3d83373617c06b5e1d6359caa00000000000000000000000000000bbbb00ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d140a6fece4f8283b2fe0ce29a07275133d71a78ae61974769c5db5ea498def810a4f1cc68aa3562c1a76213de7efb16016cd752189b7e020e7dab7f3dc3179b830b0123456789abcdeffedcba98765432100201010000000000000000000000000000bbbb00ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c403be2aee6fcae754be28ec7c77e590f6d0fe38b8f646c26b602fadfac17c931223ee49ade3d7723891c7e771b404f17810b455dda3d10bd115b299457d2a4940200",
    "0000002a04190123456789abcdeffedcba9876543210032a000000000000000000000000000000070968656c6c6f",
    "00000014041a0123456789abcdeffedcba98765432100423",
    "00000145041b0123456789abcdeffedcba9876543210050000000000000000000000000000bbbb007f000001a11f020123456789abcdeffedcba9876543210010202d016df3d83373617c06b5e1d6359caa00000000000000000000000000000bbbb00ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d140a6fece4f8283b2fe0ce29a07275133d71a78ae61974769c5db5ea498def810a4f1cc68aa3562c1a76213de7efb16016cd752189b7e020e7dab7f3dc3179b830b0123456789abcdeffedcba98765432100201010000000000000000000000000000bbbb00ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c403be2aee6fcae754be28ec7c77e590f6d0fe38b8f646c26b602fadfac17c931223ee49ade3d7723891c7e771b404f17810b455dda3d10bd115b299457d2a49402",
    "000000b7041c0123456789abcdeffedcba9876543210042a021111111111111111111111111111111111111111111111111111111111111111222222222222222222222222222222222222222222222222222222222222222200ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1409b578d4f9a7faee0f273491e59ef96a156a114e6b9f7451142d709023292d72fd7c5e7c8a4ff47b8040fa7281b150f459a6ca9236286111c06a3b79644239c04",
    "0000011d041d020123456789abcdeffedcba9876543210010202d016df3d83373617c06b5e1d6359caa00000000000000000000000000000bbbb00ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d140a6fece4f8283b2fe0ce29a07275133d71a78ae61974769c5db5ea498def810a4f1cc68aa3562c1a76213de7efb16016cd752189b7e020e7dab7f3dc3179b830b0123456789abcdeffedcba98765432100201010000000000000000000000000000bbbb00ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c403be2aee6fcae754be28ec7c77e590f6d0fe38b8f646c26b602fadfac17c931223ee49ade3d7723891c7e771b404f17810b455dda3d10bd115b299457d2a49402",
    "00000014041e0123456789abcdeffedcba98765432100009",
    "00000014041e0123456789abcdeffedcba98765432100104",
    "00000014041e0123456789abcdeffedcba98765432100205",
];

#[test]
fn every_message_kind_encodes_to_the_same_bytes_as_before() {
    let frames: Vec<String> = messages()
        .iter()
        .map(|m| {
            let f = frame::encode(m, 1 << 20).expect("a test message encodes");
            format!("{}{}", hex(&f.head), hex(&f.payload))
        })
        .collect();
    if std::env::var_os("PRINT_GOLDEN").is_some() {
        for f in &frames {
            println!("    \"{f}\",");
        }
    }
    assert_eq!(frames.len(), GOLDEN.len(), "one golden frame per message");
    for (i, (got, want)) in frames.iter().zip(GOLDEN).enumerate() {
        assert_eq!(got, want, "message {i} ({})", messages()[i].kind());
    }
}

#[test]
fn every_golden_frame_decodes_to_its_message() {
    for (want, golden) in messages().into_iter().zip(GOLDEN) {
        let bytes = unhex(golden);
        let got = frame::decode(Bytes::from(bytes), 1 << 20).expect("a golden frame decodes");
        assert_eq!(got, want);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
