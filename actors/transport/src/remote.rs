//! The transport as the layers above it see it: [`Remote`], a trait a test can implement in-process (the
//! seam the simulations and in-process cluster tests replace), and [`TransportRemote`], the real one.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::{PeerState, Transport, TransportError};

/// Why a message to another process failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// It never reached the peer (no session, peer down, overloaded): safe to send elsewhere.
    #[error("not delivered to {0}")]
    NotDelivered(String),
    /// It may have been delivered and acted on; no answer came in time.
    #[error("no answer from {0} in time")]
    NoAnswer(String),
}

/// A peer as the failure detector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: String,
    pub state: PeerState,
}

/// Calls to the other members of the cluster.
pub trait Remote: Send + Sync + 'static {
    /// Sends `payload` to node `node`'s endpoint and waits at most `timeout` for the answer.
    fn call(&self, node: &str, payload: Vec<u8>, timeout: Duration)
        -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>;

    /// Every peer, with its state.
    fn peers(&self) -> Vec<Peer>;

    /// Starts keeping a session to node `id` at cluster address `addr` (a member that joined after this
    /// process started); nothing if it is known already.
    fn add_peer(&self, _id: &str, _addr: &str) {}

    /// Whether the failure detector holds `node` down.
    fn is_down(&self, node: &str) -> bool {
        self.peers().iter().any(|p| p.id == node && p.state == PeerState::Down)
    }
}

/// The cluster transport as a [`Remote`].
pub struct TransportRemote(pub Arc<Transport>);

impl Remote for TransportRemote {
    fn call(
        &self,
        node: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
        let (transport, node) = (self.0.clone(), node.to_owned());
        Box::pin(async move {
            transport.call(&node, payload, timeout).await.map_err(|e| match e {
                // Never reached the peer: another replica may take the call.
                TransportError::NotConnected { .. }
                | TransportError::PeerDown { .. }
                | TransportError::Overloaded { .. }
                | TransportError::Stopped
                | TransportError::Start(_) => RemoteError::NotDelivered(node),
                TransportError::Timeout { .. } | TransportError::Lost { .. } | TransportError::Remote { .. } => {
                    RemoteError::NoAnswer(node)
                }
            })
        })
    }

    fn add_peer(&self, id: &str, addr: &str) {
        match cluster_config::parse_seed(&format!("{id}@{addr}")) {
            Ok(seed) => {
                if self.0.add_peer(&seed.id, seed.addr) {
                    tracing::info!(peer = id, addr, "new cluster member");
                }
            }
            Err(e) => tracing::warn!(peer = id, addr, error = %e, "a member's address is unusable"),
        }
    }

    fn peers(&self) -> Vec<Peer> {
        self.0.peers().into_iter().map(|p| Peer { id: p.id, addr: p.addr.to_string(), state: p.state }).collect()
    }
}
