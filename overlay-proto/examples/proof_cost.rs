//! What authenticity costs per message: the time to sign and to check a
//! root's proof, and its bytes on the wire, for a run of one message (light
//! load) and of 256 (heavy load, the most one proof covers).
//!
//! `cargo run --release -p overlay-proto --example proof_cost`

use std::time::Instant;

use bytes::Bytes;
use overlay_proto::frame;
use overlay_proto::keys::Ed25519Signer;
use overlay_proto::message::Data;
use overlay_proto::proof::{digest, Proof, MAX_PROOF_RUN};
use overlay_proto::{Message, Mid, NodeId};

fn main() {
    let key = Ed25519Signer::from_seed(&[7; 32]);
    let mid = Mid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
    let payload = Bytes::from(vec![0u8; 256]);
    let msgs: Vec<Data> = (1..=MAX_PROOF_RUN as u64)
        .map(|seq| Data::new(mid, 1, seq, NodeId(9), seq, payload.clone()))
        .collect();
    let rounds = 2000;

    let t = Instant::now();
    for _ in 0..rounds {
        for d in &msgs[..16] {
            std::hint::black_box(digest(d));
        }
    }
    let digest_us = t.elapsed().as_secs_f64() * 1e6 / (rounds * 16) as f64;
    println!("digest of a 256 B message (SHA-256):   {digest_us:.2} us");

    for run in [1, MAX_PROOF_RUN] {
        let digests: Vec<_> = msgs[..run].iter().map(digest).collect();
        let t = Instant::now();
        let mut proof = None;
        for _ in 0..rounds {
            proof = Some(Proof::sign(&key, mid, 1, 1, digests.clone()));
        }
        let sign_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let proof = proof.expect("signed");
        let t = Instant::now();
        for _ in 0..rounds {
            assert!(std::hint::black_box(&proof).is_signed());
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let frame = frame::encode(&Message::Proof(std::sync::Arc::new(proof)), 1 << 20)
            .expect("a proof encodes");
        let bytes = frame.head.len() + frame.payload.len();
        println!(
            "proof of {run:>3} message(s): sign {sign_us:.1} us, check {verify_us:.1} us, {bytes} B on the wire; per message: sign {:.2} us, check {:.2} us, {:.1} B",
            sign_us / run as f64,
            verify_us / run as f64,
            bytes as f64 / run as f64
        );
    }
}
