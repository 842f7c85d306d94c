//! The control socket: a Unix-domain socket through which the CLI and local
//! applications talk to the daemon (see [`crate::api`] for the protocol).
//!
//! Each connected application gets a reader task, which hands its requests
//! to the daemon's actor, and a writer task, which drains a bounded queue of
//! answers and subscription messages. A malformed or oversized frame ends
//! that application's connection with an error frame; the daemon goes on.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use smol::channel::Sender;
use smol::io::AsyncWriteExt;
use smol::net::unix::{UnixListener, UnixStream};

use crate::api::{self, ApiError, ClientFrame, ErrorKind, Response, ServerFrame};
use crate::daemon::Msg;
use crate::subscribers::{frame_cost, ClientConn};

/// Binds the control socket at `path`. A socket file left by a node that is
/// no longer running is replaced; one that a running node answers on is an
/// error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another overlay-node is already running with control socket {}: stop it, or use another --data-dir",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| {
            format!("cannot remove the stale control socket {}", path.display())
        })?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    UnixListener::bind(path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))
}

/// Accepts applications on `listener` until the daemon ends.
pub(crate) async fn serve(
    listener: UnixListener,
    inbox: Sender<Msg>,
    max_frame: usize,
    queue: usize,
    max_clients: usize,
) {
    let next = AtomicU64::new(1);
    let connected = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: back off rather than spin.
                tracing::warn!(error = %e, "cannot accept a control connection");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if connected.load(Ordering::Relaxed) >= max_clients {
            let frame = error_frame(0, ErrorKind::Overloaded, format!(
                "the node already serves {max_clients} control connections (max_control_clients); close one and retry"
            ));
            let _ = stream.write_all(&frame).await;
            continue;
        }
        connected.fetch_add(1, Ordering::Relaxed);
        let client = next.fetch_add(1, Ordering::Relaxed);
        let inbox = inbox.clone();
        let connected = connected.clone();
        smol::spawn(async move {
            serve_client(client, stream, inbox, max_frame, queue).await;
            connected.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

fn error_frame(id: u64, kind: ErrorKind, message: String) -> Vec<u8> {
    api::encode(&ServerFrame {
        id,
        response: Response::Error(ApiError { kind, message }),
    })
    .unwrap_or_default()
}

async fn serve_client(
    client: u64,
    stream: UnixStream,
    inbox: Sender<Msg>,
    max_frame: usize,
    queue: usize,
) {
    let (tx, rx) = smol::channel::bounded::<ServerFrame>(queue);
    let queued = Arc::new(AtomicUsize::new(0));
    let conn = ClientConn::new(tx, queued.clone());
    if inbox.send(Msg::ClientUp { client, conn }).await.is_err() {
        return;
    }
    let mut writer = stream.clone();
    let write_task = smol::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Ok(first) = rx.recv().await {
            buf.clear();
            let mut next = Some(first);
            let mut cost = 0;
            while let Some(frame) = next {
                cost += frame_cost(&frame);
                match api::encode(&frame) {
                    Ok(bytes) => buf.extend_from_slice(&bytes),
                    Err(e) => tracing::warn!(error = %e, "cannot encode a control answer"),
                }
                next = if buf.len() < 256 * 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            // The frames left the queue: what stays is the encoded batch,
            // at most one (bounded) batch per connection.
            queued.fetch_sub(cost, Ordering::Relaxed);
            if writer.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut reader = stream.clone();
    loop {
        match api::read_frame::<ClientFrame, _>(&mut reader, max_frame).await {
            Ok(Some(frame)) => {
                if inbox
                    .send(Msg::ClientRequest { client, frame })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    tracing::warn!(client, error = %e, "closing control connection: bad frame");
                    let mut s = stream.clone();
                    let _ = s
                        .write_all(&error_frame(0, ErrorKind::BadRequest, e.to_string()))
                        .await;
                }
                break;
            }
        }
    }
    let _ = inbox.send(Msg::ClientGone { client }).await;
    drop(write_task);
}
