//! Who may lead a group: the root that issued it, then, epoch by epoch,
//! whom each root named as its successors.
//!
//! A group's first root is the node whose id the mid carries (see
//! [`crate::proof::issued_by`]). Every root signs a [`Mandate`]: "in epoch
//! `e` I lead `mid`, and these replicas may take over from me, in this
//! order". A replica that takes over signs the next epoch's mandate, and the
//! chain of mandates from the first epoch on, a [`Lineage`], proves to any
//! node that it leads: the first mandate is signed by the issuing root, each
//! later one by a node the one before named. Epochs go up by one per link,
//! so no node can jump to a late epoch, and a node that was never named
//! cannot lead at all.
//!
//! A root claims the group with its lineage wherever it used to claim it
//! with its word: the sync that makes a node its replica, the notice that
//! tells an older root to step down ([`crate::message::NotRoot`]), and, for
//! groups past their first epoch, ahead of the proofs it sends down the tree
//! (members check each proof's key against the lineage's mandate of the
//! proof's epoch).
//!
//! Two lineages of one group are ordered where they first differ: the same
//! root's mandates by the number it gives each (a root signs a new one
//! whenever its replicas change), so a replica it has since replaced cannot
//! lead against a node that knows the newer mandate; two roots of one
//! epoch (two replicas that each took over) by their distance to the mid,
//! the closer first; and a lineage that goes on past the other's end (a
//! later epoch) leads it. Every node keeps the best lineage it has checked for each group
//! it is on, replicates or replays ([`Lineages`]), and checks only the links
//! a new lineage does not share with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{distance, Mid, NodeId};
use crate::keys::{PublicKey, Signer, MAX_SIGNATURE};
use crate::message::MAX_REPLICAS;
use crate::proof::{issued_by, Proof};

/// Most epochs a group can have: a lineage is at most this many mandates
/// long. A group whose root was replaced this often must be created again.
pub const MAX_EPOCHS: usize = 256;

/// A root's signed word: it leads `mid` in `epoch`, and `successors` may
/// take over from it, in this order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mandate {
    /// The group.
    pub mid: Mid,
    /// The epoch this root leads.
    pub epoch: u32,
    /// Counts this root's mandates in this epoch: a later one (new
    /// replicas) replaces an earlier one.
    pub version: u64,
    /// The replicas that may lead the next epoch, in takeover order (at
    /// most [`MAX_REPLICAS`]).
    pub successors: Vec<NodeId>,
    /// The root's public key.
    pub key: PublicKey,
    /// The root's signature over everything above.
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for Mandate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mandate")
            .field("mid", &self.mid)
            .field("epoch", &self.epoch)
            .field("version", &self.version)
            .field("root", &self.key.id())
            .field("successors", &self.successors)
            .finish_non_exhaustive()
    }
}

impl Mandate {
    /// Signs a mandate with `signer`.
    pub fn sign(
        signer: &dyn Signer,
        mid: Mid,
        epoch: u32,
        version: u64,
        successors: Vec<NodeId>,
    ) -> Mandate {
        let signed = signed_bytes(mid, epoch, version, &successors);
        Mandate {
            mid,
            epoch,
            version,
            successors,
            key: signer.public_key().clone(),
            signature: signer.sign(&signed),
        }
    }

    /// The root this mandate is from.
    pub fn root(&self) -> NodeId {
        self.key.id()
    }

    fn is_signed(&self) -> bool {
        self.signature.len() <= MAX_SIGNATURE
            && self.key.verify(
                &signed_bytes(self.mid, self.epoch, self.version, &self.successors),
                &self.signature,
            )
    }
}

fn signed_bytes(mid: Mid, epoch: u32, version: u64, successors: &[NodeId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + successors.len() * 16);
    b.extend_from_slice(b"overlay mandate v3\0");
    b.extend_from_slice(&mid.0.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&(successors.len() as u32).to_be_bytes());
    for s in successors {
        b.extend_from_slice(&s.0.to_be_bytes());
    }
    b
}

/// A group's mandates from its first epoch on: `mandates[i]` is epoch
/// `i + 1`'s. It proves who led each epoch, and who may lead the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The mandates, first epoch first.
    pub mandates: Vec<Mandate>,
}

/// Why a lineage was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    /// Its shape is wrong: empty, too long, epochs out of order, another
    /// group's mandate, too many successors.
    #[error("malformed lineage")]
    Malformed,
    /// A mandate is not signed by its key, or its key is not the one the
    /// epoch before named (or, first, the issuing root's).
    #[error("a mandate in the lineage is not signed by the node it had to come from")]
    Forged,
}

impl Lineage {
    /// The first epoch's lineage of a group this node issued.
    pub fn first(signer: &dyn Signer, mid: Mid, successors: Vec<NodeId>) -> Lineage {
        Lineage {
            mandates: vec![Mandate::sign(signer, mid, 1, 1, successors)],
        }
    }

    /// The group (of the first mandate: [`Lineage::well_formed`] checks
    /// that every mandate is of the same group).
    pub fn mid(&self) -> Option<Mid> {
        self.mandates.first().map(|m| m.mid)
    }

    /// The epoch whose root this lineage proves (0 if empty).
    pub fn epoch(&self) -> u32 {
        self.mandates.len() as u32
    }

    /// The current mandate.
    pub fn last(&self) -> Option<&Mandate> {
        self.mandates.last()
    }

    /// The root of the current epoch.
    pub fn root(&self) -> Option<NodeId> {
        self.last().map(Mandate::root)
    }

    /// The key that leads `epoch`, if this lineage reaches it.
    pub fn key_of(&self, epoch: u32) -> Option<&PublicKey> {
        let i = (epoch as usize).checked_sub(1)?;
        self.mandates.get(i).map(|m| &m.key)
    }

    /// This lineage with the current root's mandate replaced by a newer
    /// one naming `successors` (the root's replicas changed).
    pub fn renewed(&self, signer: &dyn Signer, successors: Vec<NodeId>) -> Lineage {
        let mut l = self.clone();
        if let Some(last) = l.mandates.pop() {
            let version = last.version.saturating_add(1);
            l.mandates.push(Mandate::sign(
                signer, last.mid, last.epoch, version, successors,
            ));
        }
        l
    }

    /// The next epoch's lineage, led by `signer`, whom the current mandate
    /// must name; `None` if it does not, or no epoch is left.
    pub fn succeeded_by(&self, signer: &dyn Signer, successors: Vec<NodeId>) -> Option<Lineage> {
        let last = self.last()?;
        let me = signer.public_key().id();
        if !last.successors.contains(&me) || self.mandates.len() >= MAX_EPOCHS {
            return None;
        }
        let epoch = last.epoch.checked_add(1)?;
        let mut l = self.clone();
        l.mandates
            .push(Mandate::sign(signer, last.mid, epoch, 1, successors));
        Some(l)
    }

    /// Whether the shape is right for `mid`, with no signature checked:
    /// what a decoder and admission can tell cheaply.
    pub fn well_formed(&self, mid: Mid) -> bool {
        !self.mandates.is_empty()
            && self.mandates.len() <= MAX_EPOCHS
            && self.mandates.iter().enumerate().all(|(i, m)| {
                m.mid == mid
                    && m.epoch as usize == i + 1
                    && m.successors.len() <= MAX_REPLICAS
                    && m.signature.len() <= MAX_SIGNATURE
            })
    }

    /// Checks every mandate that `known` (a lineage checked before) does
    /// not hold as it is: each is signed by its key, and its key is the
    /// issuing root's (first epoch) or named by the epoch before.
    pub fn check(&self, mid: Mid, known: Option<&Lineage>) -> Result<(), LineageError> {
        if !self.well_formed(mid) {
            return Err(LineageError::Malformed);
        }
        let shared = known.map_or(0, |k| {
            self.mandates
                .iter()
                .zip(&k.mandates)
                .take_while(|(a, b)| a == b)
                .count()
        });
        for i in shared..self.mandates.len() {
            let m = &self.mandates[i];
            let root = m.root();
            let named = match i {
                0 => issued_by(mid, root),
                _ => self.mandates[i - 1].successors.contains(&root),
            };
            if !named || !m.is_signed() {
                return Err(LineageError::Forged);
            }
        }
        Ok(())
    }

    /// Whether this lineage leads before `other` (both checked, of the
    /// same group). Where they first differ: the same root's later
    /// mandate (so a replica the root has since replaced cannot lead from
    /// the mandate that named it, against one who knows the newer one),
    /// or, between two roots of one epoch (two replicas that both took
    /// over), the one closer to the mid. Where one goes on past the
    /// other's end, the longer: a later epoch.
    pub fn leads(&self, other: &Lineage) -> bool {
        let shared = self
            .mandates
            .iter()
            .zip(&other.mandates)
            .take_while(|(a, b)| a == b)
            .count();
        match (self.mandates.get(shared), other.mandates.get(shared)) {
            (Some(a), Some(b)) => {
                let (ra, rb) = (a.root(), b.root());
                if ra == rb {
                    a.version > b.version
                } else {
                    let mid = a.mid.key();
                    distance(ra.key(), mid) < distance(rb.key(), mid)
                }
            }
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Whether `proof` is signed by the key that led its epoch, as far as
    /// this lineage (possibly empty) tells: the first epoch's root is the
    /// issuing root whatever the lineage holds.
    pub fn may_prove(&self, proof: &Proof) -> bool {
        match proof.epoch {
            0 => false,
            1 => issued_by(proof.mid, proof.key.id()),
            e => self.key_of(e) == Some(&proof.key),
        }
    }
}

/// What a lineage offered to [`Lineages::offer`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Checked and better than what was held: now held.
    Adopted,
    /// Checked, or the same as held, but not better.
    Kept,
}

/// The best lineage this node has checked, per group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lineages {
    held: BTreeMap<Mid, Arc<Lineage>>,
}

impl Lineages {
    /// The lineage held for `mid`.
    pub(crate) fn get(&self, mid: Mid) -> Option<&Arc<Lineage>> {
        self.held.get(&mid)
    }

    /// The epoch of the lineage held for `mid` (0: none).
    pub(crate) fn epoch(&self, mid: Mid) -> u32 {
        self.held.get(&mid).map_or(0, |l| l.epoch())
    }

    /// Checks `new` against what is held and adopts it if it leads. At
    /// most `max` groups are held: a new group beyond them is checked but
    /// not kept.
    pub(crate) fn offer(
        &mut self,
        mid: Mid,
        new: &Arc<Lineage>,
        max: usize,
    ) -> Result<Offered, LineageError> {
        let held = self.held.get(&mid);
        if held.is_some_and(|h| **h == **new) {
            return Ok(Offered::Kept);
        }
        new.check(mid, held.map(|h| &**h))?;
        if held.is_some_and(|h| !new.leads(h)) {
            return Ok(Offered::Kept);
        }
        if held.is_none() && self.held.len() >= max {
            return Ok(Offered::Kept);
        }
        self.held.insert(mid, new.clone());
        Ok(Offered::Adopted)
    }

    /// Holds our own lineage, as the group's root.
    pub(crate) fn set(&mut self, mid: Mid, lineage: Arc<Lineage>) {
        self.held.insert(mid, lineage);
    }

    /// Whether `proof`'s key led its epoch.
    pub(crate) fn may_prove(&self, proof: &Proof) -> bool {
        match self.held.get(&proof.mid) {
            Some(l) => l.may_prove(proof),
            None => Lineage::default().may_prove(proof),
        }
    }

    /// Forgets the groups `keep` says no.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Mid) -> bool) {
        self.held.retain(|mid, _| keep(*mid));
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::keys::Ed25519Signer;

    fn key(n: u8) -> Ed25519Signer {
        Ed25519Signer::from_seed(&[n; 32])
    }

    fn id(n: u8) -> NodeId {
        key(n).public_key().id()
    }

    /// A group issued by key 1, with 2 and 3 its replicas.
    fn group() -> (Mid, Lineage) {
        let mid = Mid::issue(id(1), &mut StdRng::seed_from_u64(7));
        (mid, Lineage::first(&key(1), mid, vec![id(2), id(3)]))
    }

    #[test]
    fn a_named_replica_leads_the_next_epoch_and_no_one_else_can() {
        let (mid, first) = group();
        first.check(mid, None).unwrap();
        assert_eq!(first.root(), Some(id(1)));

        let second = first.succeeded_by(&key(3), vec![id(2)]).unwrap();
        second.check(mid, None).unwrap();
        second.check(mid, Some(&first)).unwrap();
        assert_eq!((second.epoch(), second.root()), (2, Some(id(3))));
        assert!(second.leads(&first));
        assert!(!first.leads(&second));

        assert!(
            first.succeeded_by(&key(4), vec![]).is_none(),
            "4 was not named"
        );
        // Forging the link anyway: signed by 4, who was not named.
        let mut forged = first.clone();
        forged
            .mandates
            .push(Mandate::sign(&key(4), mid, 2, 1, vec![]));
        assert_eq!(forged.check(mid, None), Err(LineageError::Forged));
        // Nor can anyone start another group's lineage, or skip an epoch.
        let own = Lineage::first(&key(4), mid, vec![]);
        assert_eq!(own.check(mid, None), Err(LineageError::Forged));
        let mut skip = first.clone();
        skip.mandates
            .push(Mandate::sign(&key(3), mid, 7, 1, vec![]));
        assert_eq!(skip.check(mid, None), Err(LineageError::Malformed));
        let mut altered = second.clone();
        altered.mandates[0].successors.push(id(4));
        assert_eq!(altered.check(mid, None), Err(LineageError::Forged));
    }

    #[test]
    fn lineages_are_ordered_by_epoch_distance_and_version() {
        let (mid, first) = group();
        let renewed = first.renewed(&key(1), vec![id(3)]);
        renewed.check(mid, Some(&first)).unwrap();
        assert!(renewed.leads(&first));
        assert!(!first.leads(&renewed));
        // Two replicas that both took over: the one closer to the mid leads.
        let by2 = first.succeeded_by(&key(2), vec![]).unwrap();
        let by3 = first.succeeded_by(&key(3), vec![]).unwrap();
        assert!(by2.leads(&by3) != by3.leads(&by2));
        let closer = if distance(id(2).key(), mid.key()) < distance(id(3).key(), mid.key()) {
            &by2
        } else {
            &by3
        };
        assert!(closer.leads(if closer == &by2 { &by3 } else { &by2 }));
    }

    #[test]
    fn a_replica_the_root_replaced_cannot_lead_against_the_root() {
        let (mid, first) = group();
        // The root named 2 and 3, then only 3: 2 keeps its old mandate.
        let renewed = first.renewed(&key(1), vec![id(3)]);
        let by2 = first.succeeded_by(&key(2), vec![]).unwrap();
        by2.check(mid, None).unwrap();
        assert!(renewed.leads(&by2), "the root knows it replaced 2");
        assert!(!by2.leads(&renewed));
        assert!(renewed.succeeded_by(&key(2), vec![]).is_none());
        let by3 = renewed.succeeded_by(&key(3), vec![]).unwrap();
        assert!(by3.leads(&renewed) && by3.leads(&by2));
    }

    #[test]
    fn lineages_held_move_only_forward() {
        let (mid, first) = group();
        let mut held = Lineages::default();
        let first = Arc::new(first);
        assert_eq!(held.offer(mid, &first, 8), Ok(Offered::Adopted));
        assert_eq!(held.offer(mid, &first, 8), Ok(Offered::Kept));
        let second = Arc::new(first.succeeded_by(&key(2), vec![]).unwrap());
        assert_eq!(held.offer(mid, &second, 8), Ok(Offered::Adopted));
        assert_eq!(held.offer(mid, &first, 8), Ok(Offered::Kept), "older");
        assert_eq!(held.epoch(mid), 2);
        let proof = |k: &Ed25519Signer, epoch| Proof::sign(k, mid, epoch, 1, vec![[0; 32]]);
        assert!(held.may_prove(&proof(&key(1), 1)));
        assert!(held.may_prove(&proof(&key(2), 2)));
        assert!(!held.may_prove(&proof(&key(3), 2)), "3 does not lead 2");
        assert!(!held.may_prove(&proof(&key(2), 3)), "no epoch 3 yet");
        assert!(!held.may_prove(&proof(&key(2), 1)), "1 was led by 1");
    }
}
