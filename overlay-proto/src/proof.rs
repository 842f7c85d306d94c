//! Proof that a group message comes from the group's root: the root signs
//! the digests of its messages, and every node checks a message against a
//! signed digest before it delivers, keeps or forwards it.
//!
//! Signing each message alone would cost the root a signature and every
//! member a verification per message. Instead the root signs *runs*: each
//! time the node has handled a batch of inputs ([`crate::Input::Flush`]),
//! the root signs one [`Proof`] over the digests of every message it
//! committed since the last one, and sends it down the tree behind them.
//! Under light load each message gets its own proof, so none waits; under
//! heavy load one signature covers many. A message and its proof travel the
//! same links in the same order, so a node holds a message only until the
//! proof right behind it arrives.
//!
//! A proof is checked once per node: its signature by the key it carries,
//! and that key against the root that led the proof's epoch (the issuing
//! root for the first epoch, whose id the mid carries; for later ones, the
//! root the group's [`crate::lineage::Lineage`] names). A digest once
//! signed is replaced only by a later epoch's proof. Its digests
//! then vouch for each message, wherever the message came from: the parent,
//! a repair, a replay, the LAN. So a forwarder or a repairer can withhold
//! messages, but cannot forge, alter, reorder or duplicate one: a message
//! whose digest differs from the signed one is dropped, and the node asks
//! another copy.
//!
//! Every node keeps the proofs that cover its repair buffer and sends them
//! ahead of the messages it serves; the root keeps those of its retention.
//! Replicas keep none: a replica that takes over proves its whole log again
//! in its own epoch, since its predecessor may have died before proving the
//! last of it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{Mid, NodeId, MID_RANDOM_BITS};
use crate::keys::{PublicKey, Signer, MAX_SIGNATURE};
use crate::message::Data;

/// Most digests one proof covers; a longer run is signed in several.
pub const MAX_PROOF_RUN: usize = 256;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The root's signature over the digests of a run of consecutive messages
/// `first..first + digests.len()` of one epoch of its stream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The group.
    pub mid: Mid,
    /// The root's epoch.
    pub epoch: u32,
    /// Sequence number of the first message covered.
    pub first: u64,
    /// The digest of each message covered, in order (at most
    /// [`MAX_PROOF_RUN`]; see [`digest`]).
    pub digests: Vec<Digest>,
    /// The root's public key.
    pub key: PublicKey,
    /// The root's signature over everything above.
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proof")
            .field("mid", &self.mid)
            .field("epoch", &self.epoch)
            .field("first", &self.first)
            .field("count", &self.digests.len())
            .finish_non_exhaustive()
    }
}

/// The digest of a group message: SHA-256 over everything a member is told
/// of it (group, epoch, sequence number, publisher, the publisher's number,
/// payload), with a label so no other signed thing can pass for it.
pub fn digest(d: &Data) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"overlay data v2\0");
    ctx.update(&d.mid.0.to_be_bytes());
    ctx.update(&d.epoch.to_be_bytes());
    ctx.update(&d.seq.to_be_bytes());
    ctx.update(&d.publisher.0.to_be_bytes());
    ctx.update(&d.pub_id.to_be_bytes());
    ctx.update(&d.payload);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

impl Proof {
    /// Signs the run `first..` of `mid`'s epoch `epoch` with `signer`.
    pub fn sign(
        signer: &dyn Signer,
        mid: Mid,
        epoch: u32,
        first: u64,
        digests: Vec<Digest>,
    ) -> Proof {
        let signed = signed_bytes(mid, epoch, first, &digests);
        Proof {
            mid,
            epoch,
            first,
            digests,
            key: signer.public_key().clone(),
            signature: signer.sign(&signed),
        }
    }

    /// One past the last sequence number covered.
    pub fn end(&self) -> u64 {
        self.first.saturating_add(self.digests.len() as u64)
    }

    /// Whether the proof is well-formed and its signature is by the key it
    /// carries. Whose key that is, is the caller's question.
    pub fn is_signed(&self) -> bool {
        !self.digests.is_empty()
            && self.digests.len() <= MAX_PROOF_RUN
            && self.signature.len() <= MAX_SIGNATURE
            && self.key.verify(
                &signed_bytes(self.mid, self.epoch, self.first, &self.digests),
                &self.signature,
            )
    }
}

fn signed_bytes(mid: Mid, epoch: u32, first: u64, digests: &[Digest]) -> Vec<u8> {
    let mut b = Vec::with_capacity(48 + digests.len() * 32);
    b.extend_from_slice(b"overlay proof v2\0");
    b.extend_from_slice(&mid.0.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&first.to_be_bytes());
    b.extend_from_slice(&(digests.len() as u32).to_be_bytes());
    for d in digests {
        b.extend_from_slice(d);
    }
    b
}

/// Whether `root` issued `mid`: the mid's high bits are its issuing root's
/// id's (see [`Mid::issue`]). Finding another key whose id matches them
/// takes about 2^80 tries.
pub fn issued_by(mid: Mid, root: NodeId) -> bool {
    (mid.0 ^ root.0) >> MID_RANDOM_BITS == 0
}

/// The root's side: digests of committed messages that no proof covers
/// yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prover {
    /// Sequence number of `digests[0]`.
    first: u64,
    digests: Vec<Digest>,
}

impl Prover {
    /// Message `seq` was committed with digest `d`. Messages come in order;
    /// a jump starts a new run (a root that took over).
    pub(crate) fn committed(&mut self, seq: u64, d: Digest) {
        if self.digests.is_empty() || self.first + self.digests.len() as u64 != seq {
            self.digests.clear();
            self.first = seq;
        }
        self.digests.push(d);
    }

    /// The proofs of everything committed since the last call.
    pub(crate) fn prove(&mut self, signer: &dyn Signer, mid: Mid, epoch: u32) -> Vec<Proof> {
        let mut out = Vec::new();
        let mut first = self.first;
        for run in std::mem::take(&mut self.digests).chunks(MAX_PROOF_RUN) {
            out.push(Proof::sign(signer, mid, epoch, first, run.to_vec()));
            first += run.len() as u64;
        }
        out
    }
}

/// What a node learned from the proofs it checked, for one stream (a
/// group's, or a replay's): the digests of messages it has not passed on
/// yet, and the proofs that cover what it keeps, to send ahead of what it
/// serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proven {
    /// Signed digests of messages from the stream's next on, at most
    /// `max` of them, with the epoch of the proof that signed each.
    digests: BTreeMap<u64, (u32, Digest)>,
    /// Proofs kept for serving, oldest first.
    kept: VecDeque<Arc<Proof>>,
    /// The last proof checked, so that the same proof arriving again (a
    /// repair after the live copy) costs no second verification.
    last: Option<Arc<Proof>>,
}

/// How a message fares against the proofs checked so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its digest is the signed one.
    Proven,
    /// No proof covers it yet.
    Unknown,
    /// A proof covers it with another digest: it is forged or altered.
    Forged,
}

impl Proven {
    /// Whether `proof` was checked before (and is kept as the last one).
    pub(crate) fn seen(&self, proof: &Proof) -> bool {
        self.last.as_deref() == Some(proof)
    }

    /// Takes a proof whose signature and signer were checked: its digests
    /// from `next` on (at most `max` ahead of it) vouch for messages to
    /// come, and it is kept (up to `keep` proofs) for serving. A digest
    /// already signed is replaced only by a later epoch's root (whose
    /// lineage was checked): a root may not sign over its own word, nor
    /// one it replaced over its successor's.
    pub(crate) fn learn(&mut self, proof: Arc<Proof>, next: u64, max: usize, keep: usize) {
        let limit = next.saturating_add(max as u64);
        for (i, d) in proof.digests.iter().enumerate() {
            let seq = proof.first + i as u64;
            if seq >= next && seq < limit {
                let e = self.digests.entry(seq).or_insert((proof.epoch, *d));
                if e.0 < proof.epoch {
                    *e = (proof.epoch, *d);
                }
            }
        }
        self.keep(proof.clone(), keep);
        self.last = Some(proof);
    }

    /// Keeps `proof` for serving, with at most `max` proofs kept (the
    /// oldest go first).
    pub(crate) fn keep(&mut self, proof: Arc<Proof>, max: usize) {
        if max == 0 || self.kept.back().is_some_and(|k| **k == *proof) {
            return;
        }
        self.kept.push_back(proof);
        while self.kept.len() > max {
            self.kept.pop_front();
        }
    }

    /// How message `d` fares.
    pub(crate) fn verdict(&self, d: &Data) -> Verdict {
        match self.digests.get(&d.seq) {
            None => Verdict::Unknown,
            Some((_, signed)) if *signed == digest(d) => Verdict::Proven,
            Some(_) => Verdict::Forged,
        }
    }

    /// The stream passed `next`: digests before it are no longer needed.
    pub(crate) fn passed(&mut self, next: u64) {
        while let Some(e) = self.digests.first_entry() {
            if *e.key() >= next {
                break;
            }
            e.remove();
        }
    }

    /// Forgets kept proofs that cover nothing from `first` on (the oldest
    /// message still kept).
    pub(crate) fn forget_before(&mut self, first: u64) {
        while self.kept.front().is_some_and(|k| k.end() <= first) {
            self.kept.pop_front();
        }
    }

    /// The kept proofs that cover any of `from..to`, oldest first.
    pub(crate) fn covering(&self, from: u64, to: u64) -> impl Iterator<Item = &Arc<Proof>> {
        self.kept
            .iter()
            .filter(move |k| k.first < to && k.end() > from)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::keys::Ed25519Signer;

    fn msg(seq: u64, payload: &'static [u8]) -> Data {
        Data::new(Mid(5), 1, seq, NodeId(9), seq, Bytes::from_static(payload))
    }

    #[test]
    fn a_proof_vouches_for_its_messages_and_nothing_else() {
        let root = Ed25519Signer::from_seed(&[1; 32]);
        let mut prover = Prover::default();
        for seq in 3..6 {
            prover.committed(seq, digest(&msg(seq, b"m")));
        }
        let proofs = prover.prove(&root, Mid(5), 1);
        assert_eq!(proofs.len(), 1);
        let p = Arc::new(proofs.into_iter().next().unwrap());
        assert!(p.is_signed());
        assert_eq!((p.first, p.end()), (3, 6));
        assert!(prover.prove(&root, Mid(5), 1).is_empty(), "nothing new");

        let mut proven = Proven::default();
        proven.learn(p.clone(), 4, 100, 8);
        assert!(proven.seen(&p));
        assert_eq!(
            proven.verdict(&msg(3, b"m")),
            Verdict::Unknown,
            "before next"
        );
        assert_eq!(proven.verdict(&msg(4, b"m")), Verdict::Proven);
        assert_eq!(proven.verdict(&msg(5, b"x")), Verdict::Forged);
        let mut other_publisher = msg(5, b"m");
        other_publisher.publisher = NodeId(10);
        assert_eq!(proven.verdict(&other_publisher), Verdict::Forged);
        assert_eq!(proven.verdict(&msg(6, b"m")), Verdict::Unknown);
        proven.passed(5);
        assert_eq!(proven.verdict(&msg(4, b"m")), Verdict::Unknown, "passed");
        assert_eq!(proven.covering(0, 4).count(), 1);
        proven.forget_before(6);
        assert_eq!(proven.covering(0, 10).count(), 0);
    }

    #[test]
    fn tampered_proofs_fail() {
        let root = Ed25519Signer::from_seed(&[1; 32]);
        let p = Proof::sign(&root, Mid(5), 1, 1, vec![[1; 32], [2; 32]]);
        assert!(p.is_signed());
        let mut moved = p.clone();
        moved.first = 2;
        assert!(!moved.is_signed());
        let mut swapped = p.clone();
        swapped.digests.swap(0, 1);
        assert!(!swapped.is_signed());
        let mut rekeyed = p.clone();
        rekeyed.key = Ed25519Signer::from_seed(&[2; 32]).public_key().clone();
        assert!(!rekeyed.is_signed());
        let mut empty = p;
        empty.digests.clear();
        assert!(!empty.is_signed());
    }

    #[test]
    fn long_runs_are_signed_in_pieces() {
        let root = Ed25519Signer::from_seed(&[1; 32]);
        let mut prover = Prover::default();
        let n = MAX_PROOF_RUN as u64 * 2 + 3;
        for seq in 1..=n {
            prover.committed(seq, [seq as u8; 32]);
        }
        let proofs = prover.prove(&root, Mid(5), 1);
        assert_eq!(proofs.len(), 3);
        assert_eq!(proofs[1].first, MAX_PROOF_RUN as u64 + 1);
        assert_eq!(proofs[2].end(), n + 1);
    }

    #[test]
    fn a_mid_names_its_issuing_root() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let root = Ed25519Signer::from_seed(&[1; 32]).public_key().id();
        let other = Ed25519Signer::from_seed(&[2; 32]).public_key().id();
        let mid = Mid::issue(root, &mut rng);
        assert!(issued_by(mid, root));
        assert!(!issued_by(mid, other));
    }
}
