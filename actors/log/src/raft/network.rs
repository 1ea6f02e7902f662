//! Raft RPC between the replicas of a shard, over whatever carries bytes between nodes.
//!
//! [`RaftTransport`] is the seam: one request/response to a node by name, bounded by a timeout. The
//! cluster transport implements it (one authenticated session per peer, shared by every group, so
//! nothing is pooled here); tests implement it in memory.
//!
//! Wire format (every message: one version byte, then bincode 2 with serde):
//!
//! - request [`RaftRpc`]: the shard and one of `AppendEntries`, `Vote`, `InstallSnapshot` (the snapshot
//!   travels in chunks of at most `snapshot_max_chunk_size`, openraft's `Chunked` transport);
//! - reply [`RaftReply`]: the same variant with openraft's result, errors included, or `Refused` when the
//!   peer could not serve the request at all (unknown shard, unreadable bytes, unknown version).
//!
//! Failures map onto openraft's errors so that it reacts as intended: no answer within the timeout is
//! `Timeout`; a transport error, a refusal or an unreadable reply is `Unreachable` (openraft backs off
//! before the next try); a request above [`MAX_REQUEST_BYTES`] is `PayloadTooLarge` (openraft resends
//! fewer entries); an error raised by the peer's raft is a `RemoteError`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{Backoff, RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};

use playground_proto::{NodeId, ShardId};

use super::lease::Lease;
use super::TypeConfig;

/// Carries raft messages between nodes: one request to node `to` (by name) and its answer.
pub trait RaftTransport: Send + Sync + 'static {
    /// One request/response to node `to` (by name), bounded by `timeout`.
    fn send(&self, to: &str, payload: Vec<u8>, timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>>;

    /// How this transport's failure detector holds node `node` now; `None` when it has no failure
    /// detector, and then the groups never go quiet (`quiet.rs`): openraft's own heartbeats and
    /// election timers are all that notices a lost leader.
    fn reachability(&self, _node: &str) -> Option<Reachability> {
        None
    }
}

/// A node as a failure detector holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// It answered lately.
    Up,
    /// It missed an answer: perhaps slow, perhaps gone.
    Suspect,
    /// Its connection closed, or it has been silent for the detector's failure timeout.
    Down,
}

/// A transport for a node without peers: every send fails at once. Enough for a one-node cluster, whose
/// groups never send anything.
pub struct NoTransport;

impl RaftTransport for NoTransport {
    fn send(&self, to: &str, _payload: Vec<u8>, _timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let reason = format!("no transport to node {to}: this node runs without peers");
        Box::pin(async move { Err(reason) })
    }
}

/// The version byte in front of every raft wire message.
const WIRE_V1: u8 = 1;
/// Requests above this are split (fewer entries per AppendEntries); the cluster transport drops frames
/// over 16 MiB.
pub(crate) const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Anything larger is not a message of ours.
const MAX_WIRE_BYTES: usize = 16 << 20;

/// A request to the replica of `shard` on another node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RaftRpc {
    pub(crate) shard: ShardId,
    pub(crate) rpc: Rpc,
}

/// The variant name is the wire tag: append variants, never rename or reorder.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRpc`]. The variant name is the wire tag: append variants only.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The peer could not serve the request at all: it holds no replica of the shard (or has not started
    /// it yet), or could not read the request.
    Refused(String),
}

pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = vec![WIRE_V1];
    // Encoding into memory has no I/O and no size limit, so it cannot fail for these types.
    let body = bincode::serde::encode_to_vec(message, bincode::config::standard())
        .expect("raft messages encode infallibly into memory");
    out.extend_from_slice(&body);
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&WIRE_V1, body)) => {
            let config = bincode::config::standard().with_limit::<MAX_WIRE_BYTES>();
            match bincode::serde::decode_from_slice(body, config) {
                Ok((message, read)) if read == body.len() => Ok(message),
                Ok((_, read)) => Err(format!("{} trailing bytes after a raft message", body.len() - read)),
                Err(e) => Err(format!("unreadable raft message: {e}")),
            }
        }
        Some((version, _)) => Err(format!("unknown raft wire version {version}")),
        None => Err("empty raft message".into()),
    }
}

/// Serves one inbound request on the local replica `raft` with its lease (None: this node holds no
/// such group). Every request here comes from a node that leads or stands for election, so the lease
/// ends before openraft sees it.
pub(crate) async fn serve(
    replica: Option<(Raft<TypeConfig>, Arc<Lease>)>,
    request: Result<RaftRpc, String>,
) -> RaftReply {
    let rpc = match request {
        Ok(r) => r,
        Err(reason) => return RaftReply::Refused(reason),
    };
    let Some((raft, lease)) = replica else {
        return RaftReply::Refused(format!("no replica of shard {} here", rpc.shard));
    };
    match rpc.rpc {
        Rpc::AppendEntries(req) => {
            lease.heard_from_leader();
            RaftReply::AppendEntries(raft.append_entries(req).await)
        }
        Rpc::Vote(req) => {
            lease.revoke();
            if lease.votes_held() {
                // Refused as openraft refuses a vote while its vote lease runs: with the vote it holds.
                let vote = raft.metrics().borrow().vote;
                return RaftReply::Vote(Ok(VoteResponse::new(vote, req.last_log_id, false)));
            }
            RaftReply::Vote(raft.vote(req).await)
        }
        Rpc::InstallSnapshot(req) => {
            lease.heard_from_leader();
            RaftReply::InstallSnapshot(raft.install_snapshot(req).await)
        }
    }
}

/// What the network of one group needs; openraft asks it for a client per peer.
pub(crate) struct Network {
    pub(crate) shard: ShardId,
    pub(crate) me: NodeId,
    pub(crate) transport: Arc<dyn RaftTransport>,
    pub(crate) rpc_timeout: Duration,
    pub(crate) lease: Arc<Lease>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    /// Cheap: the transport keeps the session to each peer, so a client is only an address.
    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            shard: self.shard,
            me: self.me,
            target,
            node: node.clone(),
            transport: self.transport.clone(),
            rpc_timeout: self.rpc_timeout,
            lease: self.lease.clone(),
        }
    }
}

/// The client for one peer of one group. The peer's node name is its `BasicNode::addr`.
pub(crate) struct Peer {
    shard: ShardId,
    me: NodeId,
    target: NodeId,
    node: BasicNode,
    transport: Arc<dyn RaftTransport>,
    rpc_timeout: Duration,
    lease: Arc<Lease>,
}

/// Why a call got no usable answer.
enum Failure {
    Timeout(Duration),
    Unreachable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("raft rpc to node {node} for shard {shard}: {reason}")]
struct PeerError {
    node: String,
    shard: ShardId,
    reason: String,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call(&self, rpc: Rpc, timeout: Duration) -> Result<RaftReply, Failure> {
        let payload = encode(&RaftRpc { shard: self.shard, rpc });
        let started = Instant::now();
        let sent = self.transport.send(&self.node.addr, payload, timeout);
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(Failure::Timeout(timeout)),
            Ok(Err(_)) if started.elapsed() >= timeout => Err(Failure::Timeout(timeout)),
            Ok(Err(reason)) => Err(Failure::Unreachable(reason)),
            Ok(Ok(bytes)) => match decode::<RaftReply>(&bytes) {
                Ok(RaftReply::Refused(reason)) => Err(Failure::Unreachable(format!("refused: {reason}"))),
                Ok(reply) => Ok(reply),
                Err(reason) => Err(Failure::Unreachable(reason)),
            },
        }
    }

    fn error<E: std::error::Error>(&self, failure: Failure, action: RPCTypes) -> RPCError<NodeId, BasicNode, E> {
        match failure {
            Failure::Timeout(timeout) => {
                RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout })
            }
            Failure::Unreachable(reason) => RPCError::Unreachable(Unreachable::new(&self.peer_error(reason))),
        }
    }

    fn peer_error(&self, reason: String) -> PeerError {
        PeerError { node: self.node.addr.clone(), shard: self.shard, reason }
    }

    fn unexpected<E: std::error::Error>(&self, reply: &RaftReply) -> RPCError<NodeId, BasicNode, E> {
        let reason = format!("unexpected reply {reply:?}");
        RPCError::Unreachable(Unreachable::new(&self.peer_error(reason)))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        let term = rpc.vote.leader_id().get_term();
        let rpc = Rpc::AppendEntries(rpc);
        if entries > 1 {
            // Measuring costs one encode more, but only for requests that carry entries.
            let size = bincode::serde::encode_to_vec(&rpc, bincode::config::standard()).map(|b| b.len()).unwrap_or(0);
            if size > MAX_REQUEST_BYTES {
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)));
            }
        }
        // Taken before the request leaves: the lease counts from the send time, never later.
        let sent = Instant::now();
        match self.call(rpc, option.hard_ttl().min(self.rpc_timeout)).await {
            Ok(RaftReply::AppendEntries(result)) => {
                match &result {
                    Ok(AppendEntriesResponse::HigherVote(_)) => self.lease.revoke(),
                    Ok(_) => self.lease.acknowledged(self.target, term, sent),
                    Err(_) => {}
                }
                result.map_err(|e| self.remote(e))
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(f) => Err(self.error(f, RPCTypes::AppendEntries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // openraft bounds each chunk by `install_snapshot_timeout`, longer than the other RPCs'.
        match self.call(Rpc::InstallSnapshot(rpc), option.hard_ttl()).await {
            Ok(RaftReply::InstallSnapshot(result)) => result.map_err(|e| self.remote(e)),
            Ok(other) => Err(self.unexpected(&other)),
            Err(f) => Err(self.error(f, RPCTypes::InstallSnapshot)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Rpc::Vote(rpc), option.hard_ttl().min(self.rpc_timeout)).await {
            Ok(RaftReply::Vote(result)) => result.map_err(|e| self.remote(e)),
            Ok(other) => Err(self.unexpected(&other)),
            Err(f) => Err(self.error(f, RPCTypes::Vote)),
        }
    }

    /// After `Unreachable`, wait 100 ms, then twice as long each time up to 1 s: a peer that is down is
    /// not hammered, and one that comes back is caught up within about a second.
    fn backoff(&self) -> Backoff {
        Backoff::new((0u32..).map(|i| Duration::from_millis(100u64 << i.min(3)).min(Duration::from_secs(1))))
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, Vote};

    use super::*;
    use playground_proto::{LogEntry, Packed};

    fn vote() -> Vote<NodeId> {
        Vote::new_committed(3, 7)
    }

    #[test]
    fn requests_round_trip() {
        let mut entry = LogEntry::default();
        entry.put("k", &1u32);
        let entries = vec![openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 7), 5),
            payload: openraft::EntryPayload::Normal(Packed { entries: vec![entry] }),
        }];
        let ae = AppendEntriesRequest { vote: vote(), prev_log_id: None, leader_commit: None, entries };
        let back: RaftRpc = decode(&encode(&RaftRpc { shard: 9, rpc: Rpc::AppendEntries(ae.clone()) })).expect("ae");
        assert_eq!(back.shard, 9);
        assert!(matches!(back.rpc, Rpc::AppendEntries(r) if format!("{r:?}") == format!("{ae:?}")));

        let v = VoteRequest { vote: vote(), last_log_id: None };
        let back: RaftRpc = decode(&encode(&RaftRpc { shard: 1, rpc: Rpc::Vote(v.clone()) })).expect("vote");
        assert!(matches!(back.rpc, Rpc::Vote(r) if r == v));

        let snap = InstallSnapshotRequest {
            vote: vote(),
            meta: SnapshotMeta::default(),
            offset: 4,
            data: vec![1, 2, 3],
            done: true,
        };
        let back: RaftRpc = decode(&encode(&RaftRpc { shard: 2, rpc: Rpc::InstallSnapshot(snap) })).expect("snap");
        assert!(matches!(back.rpc, Rpc::InstallSnapshot(r) if r.data == vec![1, 2, 3] && r.offset == 4 && r.done));
    }

    #[test]
    fn replies_round_trip_errors_included() {
        let replies = vec![
            RaftReply::AppendEntries(Ok(AppendEntriesResponse::Success)),
            RaftReply::AppendEntries(Ok(AppendEntriesResponse::HigherVote(vote()))),
            RaftReply::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped))),
            RaftReply::Vote(Ok(VoteResponse::new(vote(), None, true))),
            RaftReply::InstallSnapshot(Ok(InstallSnapshotResponse { vote: vote() })),
            RaftReply::Refused("no replica".into()),
        ];
        for reply in replies {
            let text = format!("{reply:?}");
            let back: RaftReply = decode(&encode(&reply)).expect("decodes");
            assert_eq!(format!("{back:?}"), text);
        }
    }

    #[test]
    fn garbage_and_unknown_versions_are_refused() {
        assert!(decode::<RaftRpc>(&[]).is_err());
        assert!(decode::<RaftRpc>(&[9, 1, 2]).is_err());
        assert!(decode::<RaftRpc>(&[WIRE_V1, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut ok = encode(&RaftRpc { shard: 1, rpc: Rpc::Vote(VoteRequest { vote: vote(), last_log_id: None }) });
        ok.push(0);
        assert!(decode::<RaftRpc>(&ok).is_err(), "trailing bytes");
    }
}
