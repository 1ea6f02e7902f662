//! The cluster transport in the shapes the layers below it want: raft messages ride it as
//! [`Request::Raft`], so one authenticated channel carries every family of request.

use std::sync::Arc;
use std::time::Duration;

use cluster_transport::Transport;
use futures::future::BoxFuture;
use playground_proto::{codec, Request};
use shardlog::RaftTransport;

/// Raft messages over the cluster transport.
pub struct TransportRaft(pub Arc<Transport>);

impl RaftTransport for TransportRaft {
    fn send(&self, to: &str, payload: Vec<u8>, timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (transport, to) = (self.0.clone(), to.to_owned());
        Box::pin(async move {
            transport.call(&to, codec::encode_wire(&Request::Raft(payload)), timeout).await.map_err(|e| e.to_string())
        })
    }
}
