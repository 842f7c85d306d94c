//! The LAN datagram opener on any bytes: anything from the multicast
//! socket, from anyone, is checked here before it reaches the node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_proto::lan::{peek_mid, GroupKey, Opener};
use overlay_proto::{Mid, NodeId};

fuzz_target!(|data: &[u8]| {
    let _ = peek_mid(data);
    let mid = Mid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
    let mut opener = Opener::new(GroupKey::from_bytes([7; 32]), mid, NodeId(1), 64);
    let mut datagram = data.to_vec();
    let _ = opener.open(&mut datagram);
});
