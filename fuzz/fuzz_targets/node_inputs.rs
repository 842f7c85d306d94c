//! One node fed an arbitrary sequence of inputs: messages from four peers
//! (any frame that decodes), connections, round-trip times, the passing of
//! time, and its user's commands. Never a panic, and the node's state
//! stays within its configured bounds.
//!
//! Input format, one operation after another: a byte chooses the
//! operation, the bytes after it are its arguments (see `step`). A message
//! is a peer (one byte) and a frame body (two bytes of length, then the
//! version and the postcard header, as on the wire after the length).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use overlay_proto::{frame, Command, Config, Input, Mid, Node, NodeId, NodeInfo};
use overlay_proto::keys::Ed25519Signer;
use rand::rngs::StdRng;
use rand::SeedableRng;

const MAX_FRAME: usize = 1 << 20;

fn info(id: u128) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        addr: SocketAddr::from(([127, 0, 0, 1], (id % 50_000) as u16 + 1000)),
    }
}

/// The node, the peers that talk to it, and the groups commands name.
const ME: u128 = 0x8000_0000_0000_0000_0000_0000_0000_0000;
const PEERS: [u128; 4] = [
    0xF000_0000_0000_0000_0000_0000_0000_0000,
    0x1000_0000_0000_0000_0000_0000_0000_0000,
    0x8100_0000_0000_0000_0000_0000_0000_0000,
    0x7FFF_0000_0000_0000_0000_0000_0000_0000,
];
const MIDS: [Mid; 2] = [
    Mid(0xF000_0000_0000_0000_0000_0000_0000_0001),
    Mid(0x8000_0000_0000_0000_0000_0000_0000_0002),
];

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        max_groups: 8,
        max_forwarded_groups: 8,
        ..Config::default()
    };
    let start = Instant::now();
    let mut now = start;
    let signer = std::sync::Arc::new(Ed25519Signer::from_seed(&[1; 32]));
    let mut node = Node::new(info(ME), signer, cfg.clone(), StdRng::seed_from_u64(1), now);
    node.handle(now, Input::Command(Command::Bootstrap { addrs: vec![] }));
    for p in PEERS {
        node.handle(now, Input::PeerUp(info(p)));
    }
    let mut r = Reader(data);
    let mut request = 0;
    while let Some(op) = r.byte() {
        let Some(input) = step(op, &mut r, &mut now, &mut request) else {
            break;
        };
        node.handle(now, input);
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle(now, Input::Timeout);
        }
        node.handle(now, Input::Flush);
        while node.poll_output().is_some() {}
    }
    assert!(
        node.groups().len() <= cfg.max_groups + cfg.max_forwarded_groups,
        "groups past their bound"
    );
    assert!(
        node.replicas().len() <= cfg.max_groups,
        "replicas past their bound"
    );
});

/// The input operation `op` makes of the bytes that follow it.
fn step(op: u8, r: &mut Reader, now: &mut Instant, request: &mut u64) -> Option<Input> {
    let peer = |b: u8| info(PEERS[b as usize % PEERS.len()]);
    let mid = |b: u8| MIDS[b as usize % MIDS.len()];
    Some(match op % 8 {
        0..=3 => {
            let from = peer(r.byte()?);
            let len = u16::from_be_bytes([r.byte()?, r.byte()?]) as usize;
            let body = r.take(len)?;
            let mut buf = BytesMut::with_capacity(frame::LENGTH_PREFIX + body.len());
            buf.put_u32(body.len() as u32);
            buf.put_slice(body);
            match frame::decode(buf.freeze(), MAX_FRAME) {
                Ok(msg) => Input::Message { from, msg },
                Err(_) => Input::Flush,
            }
        }
        4 => {
            *now += Duration::from_millis(r.byte()? as u64 * 20);
            Input::Timeout
        }
        5 => match r.byte()? {
            b if b % 2 == 0 => Input::PeerUp(peer(b / 2)),
            b => Input::PeerDown(peer(b / 2).id),
        },
        6 => {
            let b = r.byte()?;
            *request += 1;
            Input::Command(match b % 5 {
                0 => Command::CreateGroup { request: *request },
                1 => Command::Join { mid: mid(b / 5) },
                2 => Command::Leave { mid: mid(b / 5) },
                3 => Command::Publish {
                    request: *request,
                    mid: mid(b / 5),
                    payload: Bytes::from_static(b"fuzz"),
                },
                _ => Command::Replay {
                    request: *request,
                    mid: mid(b / 5),
                    from: 1,
                    to: u64::from(r.byte()?),
                },
            })
        }
        _ => Input::Rtt {
            peer: peer(r.byte()?),
            rtt: Duration::from_micros(u64::from(r.byte()?) * 100 + 1),
        },
    })
}
