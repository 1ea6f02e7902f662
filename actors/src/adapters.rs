//! The cluster transport in the shapes the layers below it want: raft messages ride it as
//! [`Request::Raft`], so one authenticated channel carries every family of request.

use std::sync::Arc;
use std::time::Duration;

use cluster_transport::{PeerState, Transport};
use futures::future::BoxFuture;
use playground_proto::{codec, Request};
use shardlog::{RaftTransport, Reachability};

/// Raft messages over the cluster transport, whose failure detector watches the other nodes for the
/// quiet groups. `.1` is this node's name.
pub struct TransportRaft(pub Arc<Transport>, pub String);

impl RaftTransport for TransportRaft {
    fn send(&self, to: &str, payload: Vec<u8>, timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (transport, to) = (self.0.clone(), to.to_owned());
        Box::pin(async move {
            transport.call(&to, codec::encode_wire(&Request::Raft(payload)), timeout).await.map_err(|e| e.to_string())
        })
    }

    /// This node is always up to itself; a node that is no peer (removed, or never known) is down.
    fn reachability(&self, node: &str) -> Option<Reachability> {
        if node == self.1 {
            return Some(Reachability::Up);
        }
        Some(match self.0.state_of(node) {
            Some(PeerState::Up) => Reachability::Up,
            Some(PeerState::Suspect) => Reachability::Suspect,
            Some(PeerState::Down) | None => Reachability::Down,
        })
    }
}
