//! Routing a shard call to the node that leads the shard: here when this node leads it, else over the
//! cluster transport; following leader hints, skipping nodes that are down, and retrying only what is
//! safe to retry. Every call is typed by its operation: the answer decoded is the operation's own.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cluster_transport::RemoteError;
use control_plane::ControlHandle;
use playground_proto::{codec, ApiError, CallMeta, Fault, Request, ShardAnswer, ShardError, ShardId};
use ractor::concurrency::oneshot;
use shardlog::StoreError;

use crate::entity::Cmd;
use crate::ops::LocalOp;
use crate::shard::ShardMsg;
use crate::supervisor::ShardTable;

/// Attempts of one call, across leader changes and unreachable nodes, within its timeout: enough to ride
/// out an election or a leadership transfer (a few hundred ms) with the pauses below.
const MAX_ATTEMPTS: u32 = 40;
/// The longest pause between two rounds over a shard's replicas.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Where each shard's calls go.
pub struct Router {
    control: Arc<ControlHandle>,
    /// The shard actors, on a node.
    table: Option<Arc<ShardTable>>,
    /// The last leader each shard was seen with.
    hints: Vec<RwLock<Option<String>>>,
}

/// The outcome of one attempt at a shard call.
pub enum Attempt<A> {
    Done(Result<A, ApiError>),
    /// Nothing was done, or the call is safe to repeat: try `leader` (or another replica).
    Elsewhere {
        leader: Option<String>,
        reason: String,
    },
}

/// What a shard's answer means for routing: done, or (not the leader) try the leader it names.
fn settle<A>(shard: ShardId, answer: ShardAnswer<A>) -> Attempt<A> {
    match answer {
        Ok(answer) => Attempt::Done(Ok(answer)),
        Err(ShardError::Api(e)) => Attempt::Done(Err(e)),
        Err(ShardError::NotLeader(moved)) => {
            Attempt::Elsewhere { leader: moved.leader, reason: format!("shard {shard} is changing leaders") }
        }
    }
}

impl Router {
    pub fn new(control: Arc<ControlHandle>, table: Option<Arc<ShardTable>>) -> Self {
        let hints = (0..control.shard_count()).map(|_| RwLock::new(None)).collect();
        Router { control, table, hints }
    }

    pub fn control(&self) -> &Arc<ControlHandle> {
        &self.control
    }

    pub fn table(&self) -> Option<&Arc<ShardTable>> {
        self.table.as_ref()
    }

    fn me(&self) -> &str {
        &self.control.me
    }

    fn is_down(&self, node: &str) -> bool {
        self.control.remote.as_ref().is_some_and(|r| r.is_down(node))
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
        let me = self.me();
        let usable = |n: &String| !tried.contains(n) && (n == me || !self.is_down(n));
        if let Some(local) = &self.control.local {
            let l = local.log.leadership(shard);
            if l.is_leader && !tried.iter().any(|t| t == me) {
                return Some(me.to_owned());
            }
            if let Some(leader) = l.leader.filter(usable) {
                return Some(leader);
            }
        }
        let hinted = self.hints.get(shard as usize).and_then(|h| h.read().ok()?.clone());
        if let Some(h) = hinted.filter(usable) {
            return Some(h);
        }
        self.control.cache.replicas(shard).into_iter().find(|n| usable(n))
    }

    /// Runs `op` on entity `key` of `shard`, on the shard's leader wherever it is.
    pub async fn execute<O: LocalOp>(
        &self,
        shard: ShardId,
        key: &str,
        op: O,
        fault: Option<Fault>,
        timeout: Duration,
    ) -> Result<O::Answer, ApiError> {
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
                self.control.cache.mark_stale();
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1)).min(MAX_PAUSE).min(left)).await;
                continue;
            };
            let attempt_result = if target == self.me() && self.table.is_some() {
                self.execute_local(shard, key.to_owned(), op.clone(), fault, left).await
            } else {
                self.execute_remote(&target, shard, key.to_owned(), op.clone(), fault, left).await
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

    /// Runs `op` on this node's shard actor, after confirming that this node leads the shard.
    pub async fn execute_local<O: LocalOp>(
        &self,
        shard: ShardId,
        key: String,
        op: O,
        fault: Option<Fault>,
        timeout: Duration,
    ) -> Attempt<O::Answer> {
        let me = self.me().to_owned();
        let again = |reason: String| Attempt::Elsewhere { leader: Some(me.clone()), reason };
        let (Some(local), Some(table)) = (&self.control.local, &self.table) else {
            return Attempt::Elsewhere { leader: None, reason: format!("{} holds no shards", self.me()) };
        };
        match tokio::time::timeout(timeout, local.log.read_barrier(shard)).await {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::NotLeader { leader, .. })) => {
                return Attempt::Elsewhere { leader, reason: format!("shard {shard} is changing leaders") }
            }
            Ok(Err(e)) => return Attempt::Done(Err(ApiError::Unavailable(e.to_string()))),
            Err(_) => {
                return Attempt::Elsewhere {
                    leader: None,
                    reason: format!("shard {shard} did not confirm its leader in time"),
                }
            }
        }
        let Some(actor) = table.get(shard) else { return again(format!("shard {shard} is restarting")) };
        let (read, retry_safe, kind) = (O::READ, op.retry_safe(), O::ENTITY.as_str());
        let (tx, rx) = oneshot();
        let cmd = Cmd::new(op, tx.into(), fault == Some(Fault::Panic));
        if actor.cast(ShardMsg::Call(O::local(key, cmd))).is_err() {
            return again(format!("shard {shard} is restarting"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => settle(shard, answer),
            Err(_) if retry_safe => again(format!("shard {shard} did not answer in time")),
            Err(_) => Attempt::Done(Err(ApiError::Timeout)),
            // The entity died with the request in hand: a read is repeated, a write's outcome is unknown.
            Ok(Err(_)) if read => again(format!("the {kind} entity restarted")),
            Ok(Err(_)) => Attempt::Done(Err(ApiError::Timeout)),
        }
    }

    async fn execute_remote<O: LocalOp>(
        &self,
        node: &str,
        shard: ShardId,
        key: String,
        op: O,
        fault: Option<Fault>,
        timeout: Duration,
    ) -> Attempt<O::Answer> {
        let Some(remote) = &self.control.remote else {
            return Attempt::Elsewhere { leader: None, reason: format!("no transport to reach {node}") };
        };
        let retry_safe = op.retry_safe();
        let meta = CallMeta { timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32, fault };
        let payload = codec::encode_wire(&Request::Shard { shard, call: op.into_call(key), meta });
        match remote.call(node, payload, timeout).await {
            Ok(bytes) => match codec::decode_wire::<ShardAnswer<O::Answer>>(b"answer", &bytes) {
                Ok(answer) => settle(shard, answer),
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
}
