//! The frame decoder on any bytes: never a panic, and whatever decodes
//! encodes again to bytes that decode to the same frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use overlay_proto::frame;

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<{ frame::LENGTH_PREFIX }>() {
        let _ = frame::body_len(*prefix, MAX);
    }
    let Ok(msg) = frame::decode(Bytes::copy_from_slice(data), MAX) else {
        return;
    };
    // Bytes, not messages, are compared: a coordinate may be NaN.
    let once = encoded(&msg);
    let again = frame::decode(Bytes::from(once.clone()), MAX).expect("an encoded frame decodes");
    assert_eq!(encoded(&again), once);
});

fn encoded(msg: &overlay_proto::Message) -> Vec<u8> {
    let f = frame::encode(msg, MAX).expect("a decoded message encodes");
    let mut buf = f.head.to_vec();
    buf.extend_from_slice(&f.payload);
    buf
}
