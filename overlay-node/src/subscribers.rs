//! Subscriptions: the applications that receive a group's messages through
//! the control socket, and what happens when they read too slowly.
//!
//! Policy for slow readers. The node never waits for an application: each
//! control connection has a queue bounded in frames (`subscriber_buffer`)
//! and in payload bytes (`subscriber_buffer_bytes`). A message that does not
//! fit is dropped for that subscriber only and counted; as soon as there is
//! room again the subscriber gets [`Response::Lagged`] with the number it
//! missed, then the messages that follow. The tree, the other subscribers
//! and the node's memory are unaffected by a reader that stalls.
//!
//! A subscription that starts at an earlier sequence number (`subscribe
//! --from SEQ`) is spliced: once the join says where the live stream starts
//! (`next`), the node replays `SEQ..next` from its buffer or the root's
//! retention while the live messages wait in a bounded queue, then sends
//! those. What the root no longer retains is reported as [`Response::Lost`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use overlay_proto::Mid;
use smol::channel::Sender;

use crate::api::{Delivery, Response, ServerFrame};

/// Bytes a frame counts against a connection's byte bound.
pub(crate) fn frame_cost(frame: &ServerFrame) -> usize {
    match &frame.response {
        Response::Message(d) => d.payload.len() + 64,
        _ => 64,
    }
}

/// One control connection's queue of answers.
#[derive(Debug, Clone)]
pub(crate) struct ClientConn {
    tx: Sender<ServerFrame>,
    /// Bytes queued and not yet written to the socket.
    queued: Arc<AtomicUsize>,
}

impl ClientConn {
    pub(crate) fn new(tx: Sender<ServerFrame>, queued: Arc<AtomicUsize>) -> Self {
        ClientConn { tx, queued }
    }

    /// Queues a frame unless the queue is full (in frames or in bytes).
    pub(crate) fn try_send(&self, frame: ServerFrame, max_bytes: usize) -> bool {
        let cost = frame_cost(&frame);
        // Counted before the frame is queued, so that the writer, which
        // subtracts once it took the frame, never subtracts first.
        let before = self.queued.fetch_add(cost, Ordering::Relaxed);
        if before + cost > max_bytes || self.tx.try_send(frame).is_err() {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the join to say where the live stream starts.
    Waiting { from: Option<u64> },
    /// Replaying up to `upto`; live messages wait in `held`.
    Replaying {
        next: u64,
        upto: u64,
        held: VecDeque<Response>,
    },
    /// Live, from `skip_below` on.
    Live { skip_below: u64 },
}

#[derive(Debug)]
struct Subscriber {
    client: u64,
    id: u64,
    missed: u64,
    phase: Phase,
}

/// A replay the daemon should ask the node for.
#[derive(Debug)]
pub(crate) struct ReplayStart {
    pub(crate) request: u64,
    pub(crate) mid: Mid,
    pub(crate) from: u64,
    pub(crate) to: u64,
}

/// Every subscription of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    by_mid: HashMap<Mid, Vec<Subscriber>>,
    /// Replay request number -> (group, client, subscription id).
    replays: HashMap<u64, (Mid, u64, u64)>,
    /// Live messages held per subscriber during its replay.
    held_max: usize,
    max_bytes: usize,
}

impl Subscribers {
    pub(crate) fn new(held_max: usize, max_bytes: usize) -> Self {
        Subscribers {
            held_max,
            max_bytes,
            ..Default::default()
        }
    }

    /// Subscriptions held by one connection.
    pub(crate) fn count_for(&self, client: u64) -> usize {
        self.by_mid
            .values()
            .flatten()
            .filter(|s| s.client == client)
            .count()
    }

    pub(crate) fn add(&mut self, mid: Mid, client: u64, id: u64, from: Option<u64>) {
        self.by_mid.entry(mid).or_default().push(Subscriber {
            client,
            id,
            missed: 0,
            phase: Phase::Waiting { from },
        });
    }

    /// Starts one waiting subscription at once, live, without a replay:
    /// for a member that is cut off from its tree but hears its LAN
    /// island, where no replay could be served.
    pub(crate) fn start_live(&mut self, mid: Mid, client: u64, id: u64) {
        for s in self.by_mid.get_mut(&mid).into_iter().flatten() {
            if s.client != client || s.id != id {
                continue;
            }
            if let Phase::Waiting { from } = s.phase {
                s.phase = Phase::Live {
                    skip_below: from.unwrap_or(0),
                };
            }
        }
    }

    pub(crate) fn remove_client(&mut self, client: u64) {
        for subs in self.by_mid.values_mut() {
            subs.retain(|s| s.client != client);
        }
        self.by_mid.retain(|_, s| !s.is_empty());
        self.replays.retain(|_, (_, c, _)| *c != client);
    }

    pub(crate) fn remove_group(&mut self, mid: Mid) {
        self.by_mid.remove(&mid);
        self.replays.retain(|_, (m, _, _)| *m != mid);
    }

    /// Every subscription, for a goodbye.
    pub(crate) fn drain(&mut self) -> Vec<(u64, u64)> {
        self.replays.clear();
        self.by_mid
            .drain()
            .flat_map(|(_, s)| s)
            .map(|s| (s.client, s.id))
            .collect()
    }

    /// The node is attached and live messages start at `next`: waiting
    /// subscriptions go live, or start a replay (numbered by `request_id`).
    pub(crate) fn joined(
        &mut self,
        mid: Mid,
        next: u64,
        mut request_id: impl FnMut() -> u64,
    ) -> Vec<ReplayStart> {
        let mut starts = Vec::new();
        for s in self.by_mid.get_mut(&mid).into_iter().flatten() {
            let Phase::Waiting { from } = s.phase else {
                continue;
            };
            match from {
                Some(from) if from < next => {
                    let request = request_id();
                    self.replays.insert(request, (mid, s.client, s.id));
                    s.phase = Phase::Replaying {
                        next: from,
                        upto: next,
                        held: VecDeque::new(),
                    };
                    starts.push(ReplayStart {
                        request,
                        mid,
                        from,
                        to: next,
                    });
                }
                from => {
                    s.phase = Phase::Live {
                        skip_below: from.unwrap_or(0),
                    }
                }
            }
        }
        starts
    }

    /// A live message of the group.
    pub(crate) fn deliver(&mut self, clients: &HashMap<u64, ClientConn>, d: &Delivery) {
        let (max_bytes, held_max) = (self.max_bytes, self.held_max);
        for s in self.by_mid.get_mut(&d.mid).into_iter().flatten() {
            match &mut s.phase {
                Phase::Waiting { .. } => {}
                Phase::Replaying { held, .. } => {
                    if held.len() < held_max {
                        held.push_back(Response::Message(d.clone()));
                    } else {
                        s.missed += 1;
                    }
                }
                Phase::Live { skip_below } => {
                    if d.lan_fallback || d.seq >= *skip_below {
                        send(clients, s, Response::Message(d.clone()), max_bytes);
                    }
                }
            }
        }
    }

    /// Messages `from..to` of the group will never be delivered here.
    pub(crate) fn lost(
        &mut self,
        clients: &HashMap<u64, ClientConn>,
        mid: Mid,
        from: u64,
        to: u64,
    ) {
        let max_bytes = self.max_bytes;
        for s in self.by_mid.get_mut(&mid).into_iter().flatten() {
            match &mut s.phase {
                Phase::Waiting { .. } => {}
                Phase::Replaying { held, .. } => held.push_back(Response::Lost { from, to }),
                Phase::Live { .. } => send(clients, s, Response::Lost { from, to }, max_bytes),
            }
        }
    }

    fn replaying(&mut self, request: u64) -> Option<&mut Subscriber> {
        let (mid, client, id) = *self.replays.get(&request)?;
        self.by_mid
            .get_mut(&mid)?
            .iter_mut()
            .find(|s| s.client == client && s.id == id)
    }

    /// A replayed message, or (`payload: None`) a replayed run that was
    /// lost.
    pub(crate) fn replayed(
        &mut self,
        clients: &HashMap<u64, ClientConn>,
        request: u64,
        response: Response,
    ) {
        let max_bytes = self.max_bytes;
        let Some(s) = self.replaying(request) else {
            return;
        };
        if let Phase::Replaying { next, .. } = &mut s.phase {
            match &response {
                Response::Message(d) => *next = d.seq.saturating_add(1),
                Response::Lost { to, .. } => *next = *to,
                _ => {}
            }
        }
        send(clients, s, response, max_bytes);
    }

    /// A replay ended: the held live messages follow, and the subscription
    /// is live. A replay that failed reports the rest of its range lost.
    pub(crate) fn replay_done(
        &mut self,
        clients: &HashMap<u64, ClientConn>,
        request: u64,
        failed: bool,
    ) {
        let max_bytes = self.max_bytes;
        let Some((mid, client, id)) = self.replays.remove(&request) else {
            return;
        };
        let Some(s) = self
            .by_mid
            .get_mut(&mid)
            .and_then(|subs| subs.iter_mut().find(|s| s.client == client && s.id == id))
        else {
            return;
        };
        let phase = std::mem::replace(&mut s.phase, Phase::Live { skip_below: 0 });
        let Phase::Replaying {
            next, upto, held, ..
        } = phase
        else {
            return;
        };
        if failed && next < upto {
            send(
                clients,
                s,
                Response::Lost {
                    from: next,
                    to: upto,
                },
                max_bytes,
            );
        }
        s.phase = Phase::Live { skip_below: upto };
        for r in held {
            send(clients, s, r, max_bytes);
        }
    }
}

/// Sends to one subscriber without waiting: when its queue is full the
/// message is counted as missed, and the count goes out first once there is
/// room.
fn send(
    clients: &HashMap<u64, ClientConn>,
    s: &mut Subscriber,
    response: Response,
    max_bytes: usize,
) {
    let Some(conn) = clients.get(&s.client) else {
        return;
    };
    if s.missed > 0 {
        let lagged = ServerFrame {
            id: s.id,
            response: Response::Lagged { missed: s.missed },
        };
        if !conn.try_send(lagged, max_bytes) {
            s.missed += 1;
            return;
        }
        s.missed = 0;
    }
    let frame = ServerFrame { id: s.id, response };
    if !conn.try_send(frame, max_bytes) {
        s.missed += 1;
    }
}
