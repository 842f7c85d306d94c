//! The client API: how local applications use a running node.
//!
//! ```no_run
//! # smol::block_on(async {
//! use overlay_node::client::Client;
//! let client = Client::connect_dir("/var/lib/overlay").await?;
//! let mid = client.create().await?;
//! let mut sub = client.subscribe(mid).await?;
//! client.publish(mid, "hello").await?;
//! while let Some(event) = sub.next().await {
//!     println!("{event:?}");
//! }
//! # Ok::<(), overlay_node::client::ClientError>(())
//! # });
//! ```
//!
//! A [`Client`] is one connection to the node's control socket. Requests can
//! be issued concurrently from many tasks; each waits for its own answer.
//! A background task reads the socket and routes answers and subscription
//! messages to whoever waits for them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use overlay_proto::{Mid, TreeEntry};
use smol::channel::{Receiver, Sender};
use smol::io::AsyncWriteExt;
use smol::lock::Mutex as AsyncMutex;
use smol::net::unix::UnixStream;

use crate::api::{
    self, ApiError, ClientFrame, Delivery, ErrorKind, Request, Response, ServerFrame, Status,
};
use crate::daemon::{NodeFile, NODE_FILE};

pub use crate::api::ErrorKind as ApiErrorKind;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node's data directory has no `node.json`: no node runs there.
    #[error(
        "no node is running with data directory {0}: start one with `overlay-node --data-dir {0}`"
    )]
    NotRunning(String),
    /// The control socket could not be reached.
    #[error("cannot reach the node's control socket {path}: {source}; is overlay-node running?")]
    Connect {
        /// The socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection to the node broke.
    #[error("the connection to the node was lost: {0}")]
    Io(#[from] std::io::Error),
    /// The node refused the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The node answered something unexpected.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The node's error kind, when the node refused the request.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// Who waits for answers to which request.
type Waiters = Arc<Mutex<HashMap<u64, Waiter>>>;

#[derive(Debug)]
struct Waiter {
    tx: Sender<Response>,
    /// A subscription keeps receiving after its first answer.
    streaming: bool,
    /// Messages dropped because the application did not read them in time,
    /// not yet reported to it.
    missed: u64,
}

/// A connection to a node's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    writer: Arc<AsyncMutex<UnixStream>>,
    waiters: Waiters,
    next_id: Arc<AtomicU64>,
    max_frame: usize,
}

/// Events of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A group message.
    Message(Delivery),
    /// This many messages were dropped because the application read too
    /// slowly.
    Lagged(u64),
    /// Messages `from..to` will never come: the root no longer retained
    /// them when this node asked (it was cut off for too long, or the
    /// replay started too far back).
    Lost {
        /// First lost sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
}

/// A stream of a group's messages; see [`Client::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    // Boxed once so that a Subscription is Unpin and easy to poll.
    rx: std::pin::Pin<Box<Receiver<Response>>>,
    /// Depth of the node in the group's tree when the subscription started.
    pub depth: u16,
    /// Sequence number of the first live message; a subscription that
    /// started at an earlier one gets the retained messages before it first.
    pub next: u64,
}

impl Subscription {
    /// The next event; `None` once the node or connection is gone.
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent, ClientError>> {
        smol::stream::StreamExt::next(self).await
    }
}

fn subscription_event(r: Response) -> Result<SubscriptionEvent, ClientError> {
    match r {
        Response::Message(d) => Ok(SubscriptionEvent::Message(d)),
        Response::Lagged { missed } => Ok(SubscriptionEvent::Lagged(missed)),
        Response::Lost { from, to } => Ok(SubscriptionEvent::Lost { from, to }),
        Response::Error(e) => Err(e.into()),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

/// A subscription is an async stream of events, for use with any
/// `futures`-style combinators.
impl smol::stream::Stream for Subscription {
    type Item = Result<SubscriptionEvent, ClientError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx
            .as_mut()
            .poll_next(cx)
            .map(|r| r.map(subscription_event))
    }
}

/// A publish whose request has been written; await [`PendingPublish::accepted`]
/// for the root's answer. Lets one task keep many publishes in flight.
#[derive(Debug)]
pub struct PendingPublish {
    rx: Receiver<Response>,
}

impl PendingPublish {
    /// Waits for the root's acceptance and returns the sequence number.
    pub async fn accepted(self) -> Result<u64, ClientError> {
        match self.rx.recv().await {
            Ok(Response::Published { seq }) => Ok(seq),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Protocol(format!("{other:?}"))),
            Err(_) => Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into())),
        }
    }
}

/// Reads `DIR/node.json` of a running node.
pub fn node_file(dir: &Path) -> Result<NodeFile, ClientError> {
    let shown = dir.display().to_string();
    let text =
        std::fs::read(dir.join(NODE_FILE)).map_err(|_| ClientError::NotRunning(shown.clone()))?;
    serde_json::from_slice(&text).map_err(|_| ClientError::NotRunning(shown))
}

impl Client {
    /// Connects to the node whose data directory is `dir`.
    pub async fn connect_dir(dir: impl AsRef<Path>) -> Result<Client, ClientError> {
        let file = node_file(dir.as_ref())?;
        Self::connect(&file.control).await
    }

    /// Connects to the control socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let waiters: Waiters = Arc::default();
        let max_frame = api::max_control_frame(64 << 20);
        smol::spawn(read_loop(stream.clone(), waiters.clone(), max_frame)).detach();
        Ok(Client {
            writer: Arc::new(AsyncMutex::new(stream)),
            waiters,
            next_id: Arc::new(AtomicU64::new(1)),
            max_frame,
        })
    }

    /// Sends a request; its answers arrive on the returned channel.
    async fn start(
        &self,
        request: Request,
        capacity: usize,
    ) -> Result<Receiver<Response>, ClientError> {
        let streaming = matches!(request, Request::Subscribe { .. });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = api::encode(&ClientFrame { id, request })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if bytes.len() > self.max_frame {
            return Err(ClientError::Protocol("request too large".into()));
        }
        let (tx, rx) = smol::channel::bounded(capacity);
        let waiter = Waiter {
            tx,
            streaming,
            missed: 0,
        };
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(id, waiter);
        let mut w = self.writer.lock().await;
        w.write_all(&bytes).await?;
        Ok(rx)
    }

    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let rx = self.start(request, 1).await?;
        match rx.recv().await {
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(r) => Ok(r),
            Err(_) => Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into())),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, ClientError> {
        match self.call(Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Creates a group rooted at this node and returns its mid.
    pub async fn create(&self) -> Result<Mid, ClientError> {
        match self.call(Request::Create).await? {
            Response::Created { mid } => Ok(mid),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Makes the node a member; returns once it is attached to the tree,
    /// with its depth.
    pub async fn join(&self, mid: Mid) -> Result<u16, ClientError> {
        match self.call(Request::Join { mid }).await? {
            Response::Joined { depth, .. } => Ok(depth),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Ends the node's membership.
    pub async fn leave(&self, mid: Mid) -> Result<(), ClientError> {
        self.call(Request::Leave { mid }).await.map(|_| ())
    }

    /// Subscribes to the group's live messages, joining first if needed;
    /// returns once attached.
    pub async fn subscribe(&self, mid: Mid) -> Result<Subscription, ClientError> {
        self.subscribe_at(mid, None).await
    }

    /// Subscribes from sequence number `from` on: the messages the root
    /// still retains from `from` come first (messages no longer retained
    /// are reported as [`SubscriptionEvent::Lost`]), then the live ones,
    /// with no gap and no duplicate.
    pub async fn subscribe_from(&self, mid: Mid, from: u64) -> Result<Subscription, ClientError> {
        self.subscribe_at(mid, Some(from)).await
    }

    async fn subscribe_at(&self, mid: Mid, from: Option<u64>) -> Result<Subscription, ClientError> {
        // Large enough that the node's own buffer, not this one, is where a
        // slow reader's messages are counted as missed.
        let rx = self
            .start(Request::Subscribe { mid, from }, 1 << 16)
            .await?;
        match rx.recv().await {
            Ok(Response::Joined { depth, next }) => Ok(Subscription {
                rx: Box::pin(rx),
                depth,
                next,
            }),
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(other) => Err(ClientError::Protocol(format!("{other:?}"))),
            Err(_) => Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into())),
        }
    }

    /// Publishes a message and waits until the root accepted it; returns
    /// its sequence number.
    pub async fn publish(&self, mid: Mid, payload: impl Into<Bytes>) -> Result<u64, ClientError> {
        self.start_publish(mid, payload).await?.accepted().await
    }

    /// Writes a publish request without waiting for the answer.
    pub async fn start_publish(
        &self,
        mid: Mid,
        payload: impl Into<Bytes>,
    ) -> Result<PendingPublish, ClientError> {
        let payload = payload.into();
        let rx = self.start(Request::Publish { mid, payload }, 1).await?;
        Ok(PendingPublish { rx })
    }

    /// Publishes every payload in order, keeping up to `window` publishes
    /// awaiting the root's answer at once, and calls `accepted` with each
    /// sequence number, in order, as the root accepts them. Returns how many
    /// were published; stops at the first failure.
    pub async fn publish_all<I, P>(
        &self,
        mid: Mid,
        payloads: I,
        window: usize,
        mut accepted: impl FnMut(u64),
    ) -> Result<u64, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: Into<Bytes>,
    {
        let mut in_flight = std::collections::VecDeque::new();
        let mut n = 0;
        for payload in payloads {
            if in_flight.len() >= window.max(1) {
                let p: PendingPublish = in_flight.pop_front().expect("window is not empty");
                accepted(p.accepted().await?);
            }
            in_flight.push_back(self.start_publish(mid, payload).await?);
            n += 1;
        }
        for p in in_flight {
            accepted(p.accepted().await?);
        }
        Ok(n)
    }

    /// The group's whole tree as the root sees it, root first.
    pub async fn tree(&self, mid: Mid) -> Result<Vec<TreeEntry>, ClientError> {
        match self.call(Request::Tree { mid }).await? {
            Response::Tree(t) => Ok(t),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

async fn read_loop(mut stream: UnixStream, waiters: Waiters, max_frame: usize) {
    while let Ok(Some(frame)) = api::read_frame::<ServerFrame, _>(&mut stream, max_frame).await {
        let mut w = waiters.lock().expect("waiters lock");
        if frame.id == 0 {
            // A connection-level error: tell everyone waiting.
            for (_, waiter) in w.drain() {
                let _ = waiter.tx.try_send(frame.response.clone());
            }
            continue;
        }
        let Some(waiter) = w.get_mut(&frame.id) else {
            continue;
        };
        if !waiter.streaming {
            let waiter = w.remove(&frame.id).expect("present");
            let _ = waiter.tx.try_send(frame.response);
            continue;
        }
        if waiter.tx.is_closed() {
            w.remove(&frame.id);
            continue;
        }
        // A subscriber that stopped reading loses messages here only after
        // its own buffer is full, and is told how many it lost.
        if waiter.missed > 0
            && waiter
                .tx
                .try_send(Response::Lagged {
                    missed: waiter.missed,
                })
                .is_ok()
        {
            waiter.missed = 0;
        }
        let missed = match frame.response {
            Response::Lagged { missed } => missed,
            _ => 1,
        };
        if waiter.missed > 0 || waiter.tx.try_send(frame.response).is_err() {
            waiter.missed += missed;
        }
    }
    waiters.lock().expect("waiters lock").clear();
}
