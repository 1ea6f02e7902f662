//! Typed calls to other members, one per request of the management and status families: each encodes
//! its [`Request`], and decodes the answer type that belongs to it. The driver, the keeper and the
//! admin operations all call through these.

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_transport::{PeerState, Remote};
use playground_proto::{codec, ClusterMeta, ControlError, MetaAnswer, NodeStatus, ReplicaAnswer, ReplicaOp, Request};

use crate::handle::ControlHandle;

/// Asks `node` for its newest metadata record.
pub async fn meta(remote: &dyn Remote, node: &str, timeout: Duration) -> MetaAnswer {
    let bytes = remote
        .call(node, codec::encode_wire(&Request::Meta), timeout)
        .await
        .map_err(|e| ControlError::Unavailable(e.to_string()))?;
    codec::decode_wire::<MetaAnswer>(b"meta", &bytes).map_err(|e| ControlError::Unavailable(e.to_string()))?
}

/// Asks `node` to carry out `op`.
pub async fn replicas(remote: &dyn Remote, node: &str, op: ReplicaOp, timeout: Duration) -> ReplicaAnswer {
    let bytes = remote
        .call(node, codec::encode_wire(&Request::Replicas(op)), timeout)
        .await
        .map_err(|e| ControlError::Unavailable(format!("{node}: {e}")))?;
    codec::decode_wire::<ReplicaAnswer>(b"replicas", &bytes).map_err(|e| ControlError::Unavailable(e.to_string()))?
}

/// The status of `node`'s replicas, if it answers in time.
pub async fn status(remote: &dyn Remote, node: &str, timeout: Duration) -> Option<NodeStatus> {
    let bytes = remote.call(node, codec::encode_wire(&Request::Status), timeout).await.ok()?;
    codec::decode_wire::<NodeStatus>(b"status", &bytes).ok()
}

/// The status of the shards this process holds.
pub fn local_status(control: &ControlHandle) -> NodeStatus {
    let shards = match &control.local {
        Some(local) => (0..control.shard_count()).filter_map(|s| local.log.status(s)).collect(),
        None => vec![],
    };
    NodeStatus { node: control.me.clone(), shards }
}

/// Every reachable member's status, this one's first.
pub async fn cluster_status(control: &ControlHandle, timeout: Duration) -> Vec<NodeStatus> {
    let mut all = vec![];
    if control.local.is_some() {
        all.push(local_status(control));
    }
    if let Some(remote) = &control.remote {
        let asks = remote
            .peers()
            .into_iter()
            .filter(|p| p.state != PeerState::Down)
            .map(|p| async move { status(remote.as_ref(), &p.id, timeout).await });
        all.extend(futures::future::join_all(asks).await.into_iter().flatten());
    }
    all
}

/// Asks the members of `record` in turn to carry out `op`, which only the metadata group's leader does:
/// [`to_metadata_leader`] over the transport.
pub async fn ask_metadata_leader(
    remote: &dyn Remote,
    record: &ClusterMeta,
    op: ReplicaOp,
    timeout: Duration,
) -> ReplicaAnswer {
    to_metadata_leader(record, op, |node, op| async move { replicas(remote, &node, op, timeout).await }).await
}

/// Sends `op`, which only the metadata group's leader carries out, to the members of `record` in turn,
/// following the leader a member names, until one answers with the record. A refusal that no other member
/// would answer otherwise (an unknown member, a drain that cannot be done) ends the search.
pub async fn to_metadata_leader<F, Fut>(record: &ClusterMeta, op: ReplicaOp, ask: F) -> ReplicaAnswer
where
    F: Fn(String, ReplicaOp) -> Fut,
    Fut: std::future::Future<Output = ReplicaAnswer>,
{
    let mut candidates: Vec<String> = record.members.iter().rev().map(|m| m.id.clone()).collect();
    let mut asked = BTreeSet::new();
    while let Some(node) = candidates.pop() {
        if !asked.insert(node.clone()) {
            continue;
        }
        match ask(node, op.clone()).await {
            Ok(Some(record)) => return Ok(Some(record)),
            Err(ControlError::NotLeader { leader: Some(leader) }) => candidates.push(leader),
            Err(e @ (ControlError::UnknownMember(_) | ControlError::CannotDrain(_))) => return Err(e),
            Ok(None) | Err(_) => {}
        }
    }
    Err(ControlError::Unavailable("no member answered for the metadata group: it has no leader".into()))
}
