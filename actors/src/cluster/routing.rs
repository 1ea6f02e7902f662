//! Routing a shard call to the node that leads the shard: here when this node leads it, else over the
//! cluster transport; following leader hints, skipping nodes that are down, and retrying only what is
//! safe to retry.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::rpc::CallResult;

use crate::codec;
use crate::entity::Reply;
use crate::error::{ApiError, StoreError};
use crate::ids::ShardId;
use crate::meta::{self, ClusterMeta};
use crate::node::ShardTable;
use crate::protocol::{NodeStatus, Request, ShardAnswer, ShardCall};
use crate::shard::ShardMsg;
use crate::store::{ShardLog, Store};

/// Attempts of one call, across leader changes and unreachable nodes, within its timeout: enough to ride
/// out an election or a leadership transfer (a few hundred ms) with the pauses below.
const MAX_ATTEMPTS: u32 = 40;
/// The longest pause between two rounds over a shard's replicas.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Why a message to another process failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// It never reached the peer (no session, peer down): safe to send elsewhere.
    #[error("not delivered to {0}")]
    NotDelivered(String),
    /// It may have been delivered and acted on; no answer came in time.
    #[error("no answer from {0} in time")]
    NoAnswer(String),
}

/// A peer as the transport's failure detector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: String,
    /// `up`, `suspect` or `down`.
    pub state: &'static str,
}

/// The cluster transport, as routing needs it.
pub trait Remote: Send + Sync + 'static {
    fn call(&self, node: &str, payload: Vec<u8>, timeout: Duration)
        -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>;
    fn peers(&self) -> Vec<Peer>;
    /// Starts keeping a session to node `id` at cluster address `addr` (a member that joined after this
    /// process started); nothing if it is known already.
    fn add_peer(&self, _id: &str, _addr: &str) {}
}

/// The shards this process holds, when it is a node.
pub struct LocalShards {
    pub table: Arc<ShardTable>,
    pub log: Arc<dyn ShardLog>,
    pub store: Arc<Store>,
}

/// Where each shard's calls go.
pub struct Router {
    pub me: String,
    pub shard_count: u32,
    pub local: Option<LocalShards>,
    pub remote: Option<Arc<dyn Remote>>,
    /// The replicas of every shard: where to look when no leader is known. The metadata record's
    /// placement once known; until then, the placement computed from the seeds.
    replicas: RwLock<Arc<Vec<Vec<String>>>>,
    /// The newest metadata record seen (`crate::meta`).
    meta: RwLock<Option<Arc<ClusterMeta>>>,
    /// Notified when a call has tried every replica it knew of a shard: the placement it routes by may be
    /// out of date, so the metadata keeper looks again soon.
    pub meta_stale: tokio::sync::Notify,
    /// The last leader each shard was seen with.
    hints: Vec<RwLock<Option<String>>>,
}

impl Router {
    pub fn new(
        me: String,
        shard_count: u32,
        local: Option<LocalShards>,
        remote: Option<Arc<dyn Remote>>,
        replicas: Vec<Vec<String>>,
    ) -> Self {
        let hints = (0..shard_count).map(|_| RwLock::new(None)).collect();
        Router {
            me,
            shard_count,
            local,
            remote,
            replicas: RwLock::new(Arc::new(replicas)),
            meta: RwLock::new(None),
            meta_stale: tokio::sync::Notify::new(),
            hints,
        }
    }

    /// The replicas of `shard` routing goes by, preferred leader first.
    pub fn replicas(&self, shard: ShardId) -> Vec<String> {
        self.replicas.read().ok().and_then(|r| r.get(shard as usize).cloned()).unwrap_or_default()
    }

    /// The newest metadata record seen, if any.
    pub fn meta(&self) -> Option<Arc<ClusterMeta>> {
        self.meta.read().ok().and_then(|m| m.clone())
    }

    /// Takes `meta` if it is newer than the record held and fits this cluster's shard count, and routes by
    /// its placement from then on; returns whether it was taken. An older record (from a replica that
    /// lags) is ignored, so the record only moves forward.
    pub fn offer_meta(&self, meta: ClusterMeta) -> bool {
        if !meta.fits(self.shard_count) {
            tracing::warn!(
                version = meta.version,
                shards = meta.shard_count,
                "cluster metadata of another shape ignored"
            );
            return false;
        }
        let Ok(mut held) = self.meta.write() else { return false };
        if held.as_ref().is_some_and(|h| h.version >= meta.version) {
            return false;
        }
        if let Ok(mut replicas) = self.replicas.write() {
            *replicas = Arc::new(meta.placement.clone());
        }
        tracing::info!(version = meta.version, members = meta.members.len(), "cluster metadata");
        *held = Some(Arc::new(meta));
        true
    }

    fn is_down(&self, node: &str) -> bool {
        self.remote.as_ref().is_some_and(|r| r.peers().iter().any(|p| p.id == node && p.state == "down"))
    }

    fn hint(&self, shard: ShardId, leader: Option<String>) {
        if let Some(slot) = self.hints.get(shard as usize) {
            if let Ok(mut h) = slot.write() {
                *h = leader;
            }
        }
    }

    /// The node to try next for `shard`, avoiding `tried`.
    fn target(&self, shard: ShardId, tried: &[String]) -> Option<String> {
        let usable = |n: &String| !tried.contains(n) && (n == &self.me || !self.is_down(n));
        if let Some(local) = &self.local {
            let l = local.log.leadership(shard);
            if l.is_leader && !tried.contains(&self.me) {
                return Some(self.me.clone());
            }
            if let Some(leader) = l.leader.filter(usable) {
                return Some(leader);
            }
        }
        let hinted = self.hints.get(shard as usize).and_then(|h| h.read().ok()?.clone());
        if let Some(h) = hinted.filter(usable) {
            return Some(h);
        }
        self.replicas(shard).into_iter().find(|n| usable(n))
    }

    /// Runs `call` on the shard's leader, wherever it is.
    pub async fn execute(
        &self,
        shard: ShardId,
        call: ShardCall,
        inject_panic: bool,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<String> = vec![];
        let mut last = ApiError::Unavailable(format!("shard {shard} has no reachable leader"));
        for attempt in 0..MAX_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(target) = self.target(shard, &tried) else {
                // Every replica was tried: an election may be under way, or the replicas moved. Start over
                // after a pause, and have the placement looked up again.
                tried.clear();
                self.meta_stale.notify_one();
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1)).min(MAX_PAUSE).min(left)).await;
                continue;
            };
            let attempt_result = if target == self.me && self.local.is_some() {
                self.execute_local(shard, call.clone(), inject_panic, left).await
            } else {
                self.execute_remote(&target, shard, call.clone(), inject_panic, left).await
            };
            match attempt_result {
                Attempt::Done(answer) => return answer,
                Attempt::Elsewhere { leader, reason } => {
                    last = ApiError::Unavailable(reason);
                    // A node that says "again, here" is tried again; one that points elsewhere is not.
                    if leader.as_deref() != Some(target.as_str()) {
                        tried.push(target);
                    }
                    self.hint(shard, leader);
                }
            }
        }
        Err(last)
    }

    /// Runs `call` on this node's shard actor, after confirming that this node leads the shard.
    pub async fn execute_local(
        &self,
        shard: ShardId,
        call: ShardCall,
        inject_panic: bool,
        timeout: Duration,
    ) -> Attempt {
        let again = |reason: String| Attempt::Elsewhere { leader: Some(self.me.clone()), reason };
        let Some(local) = &self.local else {
            return Attempt::Elsewhere { leader: None, reason: format!("{} holds no shards", self.me) };
        };
        match tokio::time::timeout(timeout, local.log.read_barrier(shard)).await {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::NotLeader { leader, .. })) => {
                return Attempt::Elsewhere { leader, reason: format!("shard {shard} is changing leaders") }
            }
            Ok(Err(e)) => return Attempt::Done(Err(e.into())),
            Err(_) => {
                return Attempt::Elsewhere {
                    leader: None,
                    reason: format!("shard {shard} did not confirm its leader in time"),
                }
            }
        }
        let Some(actor) = local.table.get(shard) else { return again(format!("shard {shard} is restarting")) };
        let (read, retry_safe, kind) = (call.is_read(), call.retry_safe(), call.kind());
        let answer = actor.call(|reply| ShardMsg::Call { call, inject_panic, reply }, Some(timeout)).await;
        match answer {
            Ok(CallResult::Success(Err(ApiError::NotLeader { leader, .. }))) => {
                Attempt::Elsewhere { leader, reason: format!("shard {shard} is changing leaders") }
            }
            Ok(CallResult::Success(r)) => Attempt::Done(r),
            Ok(CallResult::Timeout) if retry_safe => again(format!("shard {shard} did not answer in time")),
            Ok(CallResult::Timeout) => Attempt::Done(Err(ApiError::Timeout)),
            // The entity died with the request in hand: a read is repeated, a write's outcome is unknown.
            Ok(CallResult::SenderError) if read => again(format!("the {kind} entity restarted")),
            Ok(CallResult::SenderError) => Attempt::Done(Err(ApiError::Timeout)),
            Err(_) => again(format!("shard {shard} is restarting")),
        }
    }

    async fn execute_remote(
        &self,
        node: &str,
        shard: ShardId,
        call: ShardCall,
        inject_panic: bool,
        timeout: Duration,
    ) -> Attempt {
        let Some(remote) = &self.remote else {
            return Attempt::Elsewhere { leader: None, reason: format!("no transport to reach {node}") };
        };
        let retry_safe = call.retry_safe();
        let payload = codec::encode(&Request::Shard { shard, call, inject_panic });
        match remote.call(node, payload, timeout).await {
            Ok(bytes) => match codec::decode::<ShardAnswer>(b"answer", &bytes) {
                Ok(Err(ApiError::NotLeader { leader, .. })) => {
                    Attempt::Elsewhere { leader, reason: format!("shard {shard} is changing leaders") }
                }
                Ok(answer) => Attempt::Done(answer),
                Err(e) => Attempt::Done(Err(ApiError::Unavailable(format!("unreadable answer from {node}: {e}")))),
            },
            Err(RemoteError::NotDelivered(_)) => {
                Attempt::Elsewhere { leader: None, reason: format!("{node} is unreachable") }
            }
            Err(RemoteError::NoAnswer(_)) if retry_safe => {
                Attempt::Elsewhere { leader: None, reason: format!("{node} did not answer in time") }
            }
            Err(RemoteError::NoAnswer(_)) => Attempt::Done(Err(ApiError::Timeout)),
        }
    }

    /// The status of the shards this node holds.
    pub fn local_status(&self) -> NodeStatus {
        let shards = match &self.local {
            Some(local) => (0..self.shard_count).filter_map(|s| local.log.status(s)).collect(),
            None => vec![],
        };
        NodeStatus { node: self.me.clone(), shards }
    }

    /// Every reachable node's status, this one's first.
    pub async fn cluster_status(&self, timeout: Duration) -> Vec<NodeStatus> {
        let mut all = vec![];
        if self.local.is_some() {
            all.push(self.local_status());
        }
        if let Some(remote) = &self.remote {
            let asks = remote.peers().into_iter().filter(|p| p.state != "down").map(|p| {
                let remote = remote.clone();
                async move {
                    let bytes = remote.call(&p.id, codec::encode(&Request::Status), timeout).await.ok()?;
                    codec::decode::<NodeStatus>(b"status", &bytes).ok()
                }
            });
            all.extend(futures::future::join_all(asks).await.into_iter().flatten());
        }
        all
    }
}

/// The outcome of one attempt at a shard call.
pub enum Attempt {
    Done(ShardAnswer),
    /// Nothing was done, or the call is safe to repeat: try `leader` (or another replica).
    Elsewhere {
        leader: Option<String>,
        reason: String,
    },
}

/// Hands a raft message to this node's groups and returns their answer.
pub type RaftHandler = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// Serves a membership or placement request (`crate::placement_driver::Driver::handle`).
pub type ReplicasHandler = Arc<
    dyn Fn(crate::placement_driver::ReplicaOp) -> BoxFuture<'static, crate::placement_driver::ReplicaAnswer>
        + Send
        + Sync,
>;

/// Answers requests from other processes: shard calls, status, raft messages (handed to `raft`) and
/// membership and placement requests (handed to `replicas`).
pub fn answer(
    router: Arc<Router>,
    raft: Option<RaftHandler>,
    replicas: Option<ReplicasHandler>,
    payload: Vec<u8>,
) -> BoxFuture<'static, Vec<u8>> {
    Box::pin(async move {
        match codec::decode::<Request>(b"request", &payload) {
            Ok(Request::Shard { shard, call, inject_panic }) => {
                let answer = if shard < router.shard_count {
                    // The caller bounds the call; this bound only keeps a lost caller from pinning work.
                    match router.execute_local(shard, call, inject_panic, Duration::from_secs(30)).await {
                        Attempt::Done(answer) => answer,
                        // On the wire, "try elsewhere" is NotLeader: the caller routes on it.
                        Attempt::Elsewhere { leader, .. } => Err(ApiError::NotLeader { shard, leader }),
                    }
                } else {
                    Err(ApiError::BadRequest(format!("shard {shard} does not exist")))
                };
                codec::encode(&answer)
            }
            Ok(Request::Status) => codec::encode(&router.local_status()),
            Ok(Request::Meta) => codec::encode(&meta::answer(&router)),
            Ok(Request::Raft(bytes)) => match &raft {
                Some(handle) => handle(bytes).await,
                None => vec![],
            },
            Ok(Request::Replicas(op)) => {
                let answer: crate::placement_driver::ReplicaAnswer = match &replicas {
                    Some(handle) => handle(op).await,
                    None => Err(ApiError::Unavailable(format!("{} does not take part in placement", router.me))),
                };
                codec::encode(&answer)
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable request from a peer");
                codec::encode::<ShardAnswer>(&Err(ApiError::BadRequest(format!("unreadable request: {e}"))))
            }
        }
    })
}
