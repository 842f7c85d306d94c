//! QUIC transport: the endpoint, and the tasks that move frames on each
//! connection.
//!
//! One UDP socket serves both directions (so a peer's address as seen on an
//! accepted connection is the address it listens on). Each side of a
//! connection opens one long-lived unidirectional stream and writes all its
//! frames there, in order; the peer reads them with one task per stream.
//! Writes go through a bounded per-connection queue drained by a writer
//! task, so the daemon's main loop only ever hands a frame over and never
//! waits for a peer: a slow peer fills its own queue and is disconnected,
//! while everyone else is unaffected.
//!
//! Reads are bounded too: every frame being read holds a reservation from
//! one [`FrameBudget`] shared by all connections, grown with the frame's
//! buffer. When the budget has no room, the read waits a moment for other
//! frames to complete and, if there is still none, its connection is
//! closed; so peers that each start large frames and finish none cannot
//! make the node hold more than the budget.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use overlay_proto::frame::{self, EncodedFrame, LENGTH_PREFIX};
use overlay_proto::{Message, NodeInfo};
use smol::channel::{Receiver, Sender};

use crate::config::Settings;
use crate::identity::Identity;
use crate::tls;

/// QUIC application error codes used when closing a connection.
pub mod codes {
    /// Orderly shutdown of the node.
    pub const SHUTDOWN: u32 = 0;
    /// The peer sent a frame that does not decode or breaks a limit.
    pub const PROTOCOL_VIOLATION: u32 = 1;
    /// The peer did not read fast enough; its queue overflowed.
    pub const SLOW_PEER: u32 = 2;
    /// Another connection to the same peer is used instead.
    pub const DUPLICATE: u32 = 3;
    /// The node has as many connections as its config allows.
    pub const OVERLOADED: u32 = 4;
}

/// Socket buffer size: quinn sets none, and the kernel default (about 208 KiB)
/// drops datagrams at full speed even on loopback.
const SOCKET_BUFFER: usize = 4 << 20;

/// How long a dial may take before the peer counts as unreachable.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's QUIC endpoint.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The endpoint.
    pub endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

impl Transport {
    /// Binds the endpoint at `settings.listen` with `identity`.
    pub fn bind(settings: &Settings, identity: &Identity) -> anyhow::Result<Transport> {
        let (server_tls, client_tls) = tls::configs(identity).context("cannot set up TLS")?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(settings.keep_alive))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(settings.idle_timeout)
                    .context("idle_timeout_ms is out of range")?,
            ))
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(4u32.into())
            // What one peer can make us buffer, unread, over all its
            // streams (quinn's default is unbounded).
            .receive_window(CONNECTION_RECEIVE_WINDOW.into());
        let transport = Arc::new(transport);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
                .context("TLS config unusable for QUIC")?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
                .context("TLS config unusable for QUIC")?,
        ));
        client.transport_config(transport);

        let socket = udp_socket(settings.listen)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::SmolRuntime),
        )
        .context("cannot start the QUIC endpoint")?;
        Ok(Transport { endpoint, client })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Connects to `addr`, expecting node `expect` there (`None`: any node).
    pub async fn dial(
        &self,
        addr: SocketAddr,
        expect: Option<overlay_proto::NodeId>,
    ) -> anyhow::Result<quinn::Connection> {
        let name = match expect {
            Some(id) => tls::server_name_for(id),
            None => tls::ANY_PEER.to_string(),
        };
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, &name)?;
        let conn = smol::future::or(async { Some(connecting.await) }, async {
            smol::Timer::after(DIAL_TIMEOUT).await;
            None
        })
        .await
        .with_context(|| format!("no answer from {addr} within {DIAL_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
        Ok(conn)
    }
}

fn udp_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into()).with_context(|| {
        format!("cannot listen on {addr}: is another node using this port? Pick another --listen address (port 0 picks a free one)")
    })?;
    Ok(socket.into())
}

/// What a connection's tasks report to the daemon.
#[derive(Debug)]
pub enum ConnEvent {
    /// A frame arrived and decoded.
    Frame {
        /// The connection's number.
        conn_id: u64,
        /// The peer.
        from: NodeInfo,
        /// The message.
        msg: Message,
    },
    /// The connection is gone.
    Closed {
        /// The connection's number.
        conn_id: u64,
        /// The peer.
        peer: NodeInfo,
        /// Why.
        reason: String,
    },
}

/// Starts reading `conn`; frames and the connection's end are reported on
/// `events`. Frames being read hold their bytes from `budget`.
pub fn spawn_reader<T: From<ConnEvent> + Send + 'static>(
    conn: quinn::Connection,
    conn_id: u64,
    peer: NodeInfo,
    max_frame: usize,
    budget: FrameBudget,
    events: Sender<T>,
) {
    smol::spawn(async move {
        let reason = loop {
            match conn.accept_uni().await {
                Ok(stream) => {
                    let reader = StreamReader {
                        conn: conn.clone(),
                        conn_id,
                        from: peer,
                        max_frame,
                        budget: budget.clone(),
                    };
                    smol::spawn(reader.run(stream, events.clone())).detach();
                }
                Err(e) => break e.to_string(),
            }
        };
        let _ = events
            .send(
                ConnEvent::Closed {
                    conn_id,
                    peer,
                    reason,
                }
                .into(),
            )
            .await;
    })
    .detach();
}

/// What one stream's reader needs besides the stream.
struct StreamReader {
    conn: quinn::Connection,
    conn_id: u64,
    from: NodeInfo,
    max_frame: usize,
    budget: FrameBudget,
}

impl StreamReader {
    async fn run<T: From<ConnEvent>>(self, mut stream: quinn::RecvStream, events: Sender<T>) {
        let StreamReader {
            conn,
            conn_id,
            from,
            max_frame,
            budget,
        } = self;
        loop {
            match read_frame(&mut stream, max_frame, &budget).await {
                Ok(Some(frame)) => match frame::decode(frame, max_frame) {
                    Ok(msg) => {
                        if events
                            .send(ConnEvent::Frame { conn_id, from, msg }.into())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer = %from.id.short(), error = %e, "closing connection: bad frame");
                        conn.close(codes::PROTOCOL_VIOLATION.into(), e.to_string().as_bytes());
                        return;
                    }
                },
                Ok(None) => return,
                Err(ReadError::Frame(e)) => {
                    tracing::warn!(peer = %from.id.short(), error = %e, "closing connection: bad frame");
                    conn.close(codes::PROTOCOL_VIOLATION.into(), e.to_string().as_bytes());
                    return;
                }
                Err(ReadError::Budget(e)) => {
                    tracing::warn!(peer = %from.id.short(), error = %e, "closing connection: frame read budget exhausted");
                    conn.close(codes::OVERLOADED.into(), b"frame read budget exhausted");
                    return;
                }
                Err(ReadError::Stream) => return,
            }
        }
    }
}

enum ReadError {
    Stream,
    Frame(frame::DecodeError),
    Budget(BudgetExhausted),
}

/// Most bytes one peer may have sent us that we have not read yet, over
/// all its streams: QUIC flow control holds it to this.
const CONNECTION_RECEIVE_WINDOW: u32 = 8 << 20;

/// The most a frame's buffer takes before its bytes arrive; a larger frame
/// grows its buffer as they do. Frames of ordinary messages fit in it.
const FRAME_FIRST_ALLOCATION: usize = 64 << 10;

/// How long a frame's read waits for room in the [`FrameBudget`] before
/// its connection is closed: long enough for the frames under way to be
/// completed by honest peers, short enough that peers that never complete
/// theirs lose their connections before honest ones time out.
const BUDGET_WAIT: Duration = Duration::from_secs(3);

/// Reads one whole frame (length prefix included), checking the length
/// before allocating anything. The buffer grows as bytes arrive, so a
/// peer that announces a large frame and sends nothing costs no more than
/// [`FRAME_FIRST_ALLOCATION`]; each growth is reserved from `budget`
/// first, and the reservation ends when the frame is handed over or the
/// read fails. `Ok(None)` at a clean end of stream.
async fn read_frame(
    stream: &mut quinn::RecvStream,
    max_frame: usize,
    budget: &FrameBudget,
) -> Result<Option<Bytes>, ReadError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    match stream.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(ReadError::Stream),
    }
    let len = frame::body_len(prefix, max_frame).map_err(ReadError::Frame)?;
    let total = LENGTH_PREFIX.saturating_add(len);
    let first = total.min(FRAME_FIRST_ALLOCATION);
    let mut held = budget.reservation();
    held.grow_to(first, BUDGET_WAIT)
        .await
        .map_err(ReadError::Budget)?;
    // A Vec rather than a BytesMut: `reserve_exact` makes the buffer the
    // size that was reserved, where BytesMut may round it up.
    let mut buf = Vec::with_capacity(first);
    buf.extend_from_slice(&prefix);
    while buf.len() < total {
        let chunk = match stream.read_chunk(total - buf.len(), true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) | Err(_) => return Err(ReadError::Stream),
        };
        let needed = buf.len().saturating_add(chunk.len());
        if needed > buf.capacity() {
            // Doubling keeps the reservations and copies few for a frame
            // that arrives in many small chunks.
            let grown = needed.max(buf.capacity().saturating_mul(2)).min(total);
            held.grow_to(grown, BUDGET_WAIT)
                .await
                .map_err(ReadError::Budget)?;
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(buf)))
}

/// Bytes that all frames being read may hold at once, over every
/// connection of the node.
///
/// Each frame's read holds a [`Reservation`] that grows with its buffer
/// and ends when the frame is handed over or the read fails. Taking room
/// is one atomic operation per growth of a buffer, not per byte or chunk;
/// only a read that finds no room waits, for a release or its deadline.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    cap: usize,
    used: AtomicUsize,
    /// Woken when room is given back, for the reads that wait for it.
    room: event_listener::Event,
}

/// A frame's read found no room in the [`FrameBudget`] within its wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame read budget exhausted: after waiting {waited:?}, a frame still needed {wanted} more bytes while the frames being read held {in_use} of the {cap} bytes of frame_read_budget; if honest peers send this much at once, raise frame_read_budget in the config file")]
pub struct BudgetExhausted {
    /// Bytes the frame asked for.
    pub wanted: usize,
    /// Bytes held by all frames being read, when the read gave up.
    pub in_use: usize,
    /// The budget.
    pub cap: usize,
    /// How long the read waited.
    pub waited: Duration,
}

impl FrameBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> FrameBudget {
        FrameBudget {
            inner: Arc::new(BudgetInner {
                cap,
                used: AtomicUsize::new(0),
                room: event_listener::Event::new(),
            }),
        }
    }

    /// The budget in bytes.
    pub fn cap(&self) -> usize {
        self.inner.cap
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// A reservation of nothing yet, for one frame to grow.
    pub fn reservation(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            held: 0,
        }
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        let cap = self.inner.cap;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= cap)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
        self.inner.room.notify(usize::MAX);
    }
}

/// Bytes of a [`FrameBudget`] held for one frame; given back on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a FrameBudget,
    held: usize,
}

impl Reservation<'_> {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Grows the reservation to `total` bytes if the budget has room now.
    pub fn try_grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.held);
        if more == 0 {
            return true;
        }
        if !self.budget.try_take(more) {
            return false;
        }
        self.held = total;
        true
    }

    /// Grows the reservation to `total` bytes, waiting up to `wait` for
    /// other reservations to give room back.
    pub async fn grow_to(&mut self, total: usize, wait: Duration) -> Result<(), BudgetExhausted> {
        if self.try_grow_to(total) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut deadline = smol::Timer::after(wait);
        loop {
            // Listening before trying again, so that a release between the
            // two is not missed.
            let released = self.budget.inner.room.listen();
            if self.try_grow_to(total) {
                return Ok(());
            }
            let woken = smol::future::or(
                async {
                    released.await;
                    true
                },
                async {
                    (&mut deadline).await;
                    false
                },
            )
            .await;
            if !woken {
                if self.try_grow_to(total) {
                    return Ok(());
                }
                return Err(BudgetExhausted {
                    wanted: total.saturating_sub(self.held),
                    in_use: self.budget.in_use(),
                    cap: self.budget.cap(),
                    waited: started.elapsed(),
                });
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
        }
    }
}

/// Most frames written in one batch.
const WRITE_BATCH: usize = 64;

/// Why a frame could not be queued for a peer.
#[derive(Debug, thiserror::Error)]
#[error("{queued} bytes in {frames} frames are already queued for this peer (peer_queue_bytes = {cap}, peer_queue_frames = {max_frames})")]
pub struct QueueFull {
    /// Bytes queued.
    pub queued: usize,
    /// Frames queued.
    pub frames: usize,
    /// The byte cap.
    pub cap: usize,
    /// The frame cap.
    pub max_frames: usize,
}

#[derive(Debug)]
struct QueueState {
    frames: VecDeque<EncodedFrame>,
    /// Bytes queued or being written.
    bytes: usize,
    closed: bool,
}

/// The outgoing frames of one connection, bounded in bytes, shared by the
/// daemon (which pushes without waiting) and the connection's writer task.
///
/// The bound is in bytes because frames share payloads: a frame count says
/// nothing about the memory a stalled peer pins.
#[derive(Debug, Clone)]
pub struct PeerQueue {
    state: Arc<Mutex<QueueState>>,
    wake: Sender<()>,
    cap: usize,
    max_frames: usize,
}

impl PeerQueue {
    /// Queues a frame for the writer, or refuses it when the peer already
    /// has `cap` bytes or `max_frames` frames waiting.
    pub fn push(&self, frame: EncodedFrame) -> Result<(), QueueFull> {
        {
            let mut s = self.state.lock().expect("queue lock");
            if s.bytes + frame.len() > self.cap || s.frames.len() >= self.max_frames {
                return Err(QueueFull {
                    queued: s.bytes,
                    frames: s.frames.len(),
                    cap: self.cap,
                    max_frames: self.max_frames,
                });
            }
            s.bytes += frame.len();
            s.frames.push_back(frame);
        }
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Bytes queued or being written.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().expect("queue lock").bytes
    }

    /// Lets the writer finish the stream once the queue is written.
    pub fn close(&self) {
        self.state.lock().expect("queue lock").closed = true;
        let _ = self.wake.try_send(());
    }
}

/// Starts the writer of `conn`, with a queue of at most `cap` bytes.
/// [`PeerQueue::close`] finishes the stream cleanly after the queued frames
/// are written; dropping the task stops it at once.
pub fn spawn_writer(
    conn: quinn::Connection,
    cap: usize,
    max_frames: usize,
) -> (PeerQueue, smol::Task<()>) {
    let (wake, woken) = smol::channel::bounded(1);
    let queue = PeerQueue {
        state: Arc::new(Mutex::new(QueueState {
            frames: VecDeque::new(),
            bytes: 0,
            closed: false,
        })),
        wake,
        cap,
        max_frames: max_frames.max(1),
    };
    let task = smol::spawn(write_loop(conn, queue.state.clone(), woken));
    (queue, task)
}

async fn write_loop(conn: quinn::Connection, state: Arc<Mutex<QueueState>>, woken: Receiver<()>) {
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let mut chunks: Vec<Bytes> = Vec::with_capacity(2 * WRITE_BATCH);
    loop {
        let (batch_bytes, closed) = {
            let mut s = state.lock().expect("queue lock");
            chunks.clear();
            let mut bytes = 0;
            while chunks.len() < 2 * WRITE_BATCH {
                let Some(f) = s.frames.pop_front() else { break };
                bytes += f.len();
                chunks.push(f.head);
                if !f.payload.is_empty() {
                    chunks.push(f.payload);
                }
            }
            (bytes, s.closed)
        };
        if chunks.is_empty() {
            if closed {
                break;
            }
            if woken.recv().await.is_err() {
                break;
            }
            continue;
        }
        if stream.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
        state.lock().expect("queue lock").bytes -= batch_bytes;
    }
    let _ = stream.finish();
    let _ = stream.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_take_what_they_grow_by_and_give_it_back_on_drop() {
        let budget = FrameBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.try_grow_to(10));
        assert!(a.try_grow_to(60));
        assert_eq!((a.held(), budget.in_use()), (60, 60));
        // Growing to less is a no-op, not a release.
        assert!(a.try_grow_to(20));
        assert_eq!(budget.in_use(), 60);
        let mut b = budget.reservation();
        assert!(!b.try_grow_to(41), "over the budget");
        assert_eq!((b.held(), budget.in_use()), (0, 60));
        assert!(b.try_grow_to(40));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_reservation_that_finds_no_room_gives_up_after_its_wait() {
        let budget = FrameBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.try_grow_to(80));
        let mut b = budget.reservation();
        assert!(b.try_grow_to(10));
        let e = smol::block_on(b.grow_to(30, Duration::from_millis(50))).unwrap_err();
        assert_eq!((e.wanted, e.in_use, e.cap), (20, 90, 100));
        assert!(e.waited >= Duration::from_millis(50), "{e}");
        assert!(
            e.to_string().starts_with("frame read budget exhausted"),
            "{e}"
        );
        assert!(e.to_string().contains("frame_read_budget"), "{e}");
        // The failed growth took nothing; what the read held goes back when
        // it is dropped.
        assert_eq!(b.held(), 10);
        drop(b);
        assert_eq!(budget.in_use(), 80);
    }

    #[test]
    fn a_waiting_reservation_takes_the_room_another_gives_back() {
        let budget = FrameBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.try_grow_to(100));
        let mut b = budget.reservation();
        let started = std::time::Instant::now();
        smol::block_on(async {
            let release = async {
                smol::Timer::after(Duration::from_millis(30)).await;
                drop(a);
            };
            let (_, grown) =
                smol::future::zip(release, b.grow_to(70, Duration::from_secs(10))).await;
            grown.unwrap();
        });
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        assert_eq!((b.held(), budget.in_use()), (70, 70));
    }

    #[test]
    fn an_overflowing_request_is_refused_not_wrapped() {
        let budget = FrameBudget::new(usize::MAX);
        let mut a = budget.reservation();
        assert!(a.try_grow_to(usize::MAX - 1));
        let mut b = budget.reservation();
        assert!(!b.try_grow_to(2));
        assert_eq!(budget.in_use(), usize::MAX - 1);
    }
}
