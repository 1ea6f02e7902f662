//! The cluster port's front door: connections are accepted here, not by ractor_cluster's listener, so
//! that a stranger who does not know the cookie cannot make this process allocate much. ractor_cluster
//! reads a frame's announced length and allocates it whole, up to 16 MiB, before any check of who sent
//! it; ten such connections cost 170 MB. Until its session has authenticated, a connection's frames may
//! announce at most [`PRE_AUTH_MAX_FRAME`] bytes (the handshake's are under a kilobyte), and at most
//! [`MAX_UNAUTHENTICATED`] connections may be unauthenticated at once. Once authenticated, a session
//! reads as ractor_cluster does. The session's deadline to authenticate is the one `sessions` enforces.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::metrics;

/// The largest frame an unauthenticated peer may announce.
pub const PRE_AUTH_MAX_FRAME: u64 = 64 * 1024;
/// Connections that may be unauthenticated at once; more are closed when accepted.
pub const MAX_UNAUTHENTICATED: usize = 64;

/// The connections not yet authenticated, by the label their session reports (the peer's address).
#[derive(Default)]
pub(crate) struct Guards {
    waiting: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Guards {
    fn register(&self, label: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.lock().insert(label.to_owned(), flag.clone());
        flag
    }

    /// The session whose peer is `label` authenticated: its connection reads frames of any size.
    pub(crate) fn authenticated(&self, label: &str) {
        if let Some(flag) = self.lock().remove(label) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    fn forget(&self, label: &str) {
        self.lock().remove(label);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts connections on `listener` and hands each to `server`, guarded, until `shutdown` is set.
pub(crate) async fn accept(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    guards: Arc<Guards>,
    mut shutdown: watch::Receiver<bool>,
) {
    let unauthenticated = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "cluster port: cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = unauthenticated.clone().try_acquire_owned() else {
            metrics::GUARD_REFUSED.inc();
            debug!(%peer, "cluster port: too many unauthenticated connections; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let guarded = Guarded::new(stream, peer, guards.clone(), permit);
        if let Err(e) =
            server.cast(NodeServerMessage::ConnectionOpenedExternal { stream: Box::new(guarded), is_server: true })
        {
            warn!(error = %e, "cluster port: the node server is gone");
            return;
        }
    }
}

/// Where the reader is in the frames it has read: in a length prefix, or inside a frame's payload.
#[derive(Debug, Default)]
struct Frames {
    prefix: [u8; 8],
    prefix_len: usize,
    payload_left: u64,
}

impl Frames {
    /// Follows `bytes` read off the wire; refuses a frame announcing more than `max`.
    fn follow(&mut self, mut bytes: &[u8], max: u64) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= take;
                bytes = &bytes[take as usize..];
                continue;
            }
            self.prefix[self.prefix_len] = bytes[0];
            self.prefix_len += 1;
            bytes = &bytes[1..];
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                let announced = u64::from_be_bytes(self.prefix);
                if announced > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("an unauthenticated peer announced a frame of {announced} bytes (at most {max})"),
                    ));
                }
                self.payload_left = announced;
            }
        }
        Ok(())
    }
}

/// A connection from a peer, with the frame limit while it is unauthenticated.
struct Guarded {
    stream: TcpStream,
    label: String,
    authenticated: Arc<AtomicBool>,
    guards: Arc<Guards>,
    frames: Frames,
    /// Held while unauthenticated.
    permit: Option<OwnedSemaphorePermit>,
}

impl Guarded {
    fn new(stream: TcpStream, peer: SocketAddr, guards: Arc<Guards>, permit: OwnedSemaphorePermit) -> Self {
        let label = peer.to_string();
        let authenticated = guards.register(&label);
        Guarded { stream, label, authenticated, guards, frames: Frames::default(), permit: Some(permit) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.guards.forget(&self.label);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.permit.is_some() && this.authenticated.load(Ordering::SeqCst) {
            this.permit = None;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), true) = (&read, this.permit.is_some()) {
            if let Err(e) = this.frames.follow(&buf.filled()[before..], PRE_AUTH_MAX_FRAME) {
                metrics::GUARD_REFUSED.inc();
                debug!(peer = %this.label, error = %e, "cluster port: connection closed");
                return Poll::Ready(Err(e));
            }
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl ClusterBidiStream for Guarded {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(*self);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }

    fn local_label(&self) -> Option<String> {
        self.stream.local_addr().ok().map(|a| a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u64) -> Vec<u8> {
        let mut f = len.to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(7u8, len as usize));
        f
    }

    #[test]
    fn frames_are_followed_across_reads_of_any_size() {
        let mut wire = frame(3);
        wire.extend(frame(0));
        wire.extend(frame(100));
        for chunk in [1, 2, 5, 8, 9, 1000] {
            let mut frames = Frames::default();
            for part in wire.chunks(chunk) {
                frames.follow(part, 100).expect("every frame is within the limit");
            }
            assert_eq!((frames.prefix_len, frames.payload_left), (0, 0), "ends between frames ({chunk} at a time)");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_by_its_prefix() {
        let mut frames = Frames::default();
        frames.follow(&frame(10), 100).expect("small");
        let big = (16u64 * 1024 * 1024).to_be_bytes();
        frames.follow(&big[..5], 100).expect("half a prefix says nothing yet");
        let err = frames.follow(&big[5..], 100).expect_err("too big");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("16777216"), "{err}");
    }

    #[test]
    fn authentication_lifts_the_limit_of_that_connection_only() {
        let guards = Guards::default();
        let a = guards.register("10.0.0.1:5000");
        let b = guards.register("10.0.0.2:5000");
        guards.authenticated("10.0.0.1:5000");
        assert!(a.load(Ordering::SeqCst));
        assert!(!b.load(Ordering::SeqCst));
        guards.forget("10.0.0.2:5000");
        assert!(guards.lock().is_empty());
    }
}
