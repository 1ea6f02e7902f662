//! Routing a shard call to the node that leads the shard: here when this node leads it, else over the
//! cluster transport; following leader hints, skipping nodes that are down, and retrying only what is
//! safe to retry. Every call is typed by its operation: the answer decoded is the operation's own.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cluster_transport::RemoteError;
use control_plane::ControlHandle;
use playground_proto::{codec, ApiError, CallMeta, Fault, Request, SessionCheck, ShardAnswer, ShardError, ShardId};
use ractor::concurrency::oneshot;
use ractor::ActorRef;
use shardlog::{ShardLog, StoreError};

use crate::entity::Cmd;
use crate::ops::LocalOp;
use crate::shard::{LocalCall, ShardMsg};
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
    /// Test-only (`faults.stale_reads`): reads run without the read guard.
    unguarded_reads: bool,
}

/// Where and as whom a call runs.
#[derive(Clone, Copy)]
pub struct Spec<'a> {
    pub shard: ShardId,
    /// A signed call's session, checked on the shard's leader right before the operation.
    pub session: Option<&'a SessionCheck>,
    /// Test-only: a fault the entity injects, where the node allows it.
    pub fault: Option<Fault>,
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
        Router { control, table, hints, unguarded_reads: false }
    }

    /// Serves reads without the read guard when `skip` (a test build breaking linearizability on purpose).
    pub fn skip_read_guard(mut self, skip: bool) -> Self {
        self.unguarded_reads = skip;
        self
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
        self.run(Spec { shard, session: None, fault }, key, op, timeout).await
    }

    /// Runs `op` as [`Router::execute`] does, for the holder of `session`, in the user's shard `shard`:
    /// the leader checks the session and runs the operation in one visit.
    pub async fn execute_signed<O: LocalOp>(
        &self,
        shard: ShardId,
        session: &SessionCheck,
        key: &str,
        op: O,
        fault: Option<Fault>,
        timeout: Duration,
    ) -> Result<O::Answer, ApiError> {
        self.run(Spec { shard, session: Some(session), fault }, key, op, timeout).await
    }

    async fn run<O: LocalOp>(
        &self,
        spec: Spec<'_>,
        key: &str,
        op: O,
        timeout: Duration,
    ) -> Result<O::Answer, ApiError> {
        let shard = spec.shard;
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
                self.execute_local(spec, key.to_owned(), op.clone(), left).await
            } else {
                self.execute_remote(&target, spec, key.to_owned(), op.clone(), left).await
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

    /// Waits for the barrier a command needs before it runs: the read guard for a read (the lease, or a
    /// read-index round), and for a write only this term's first entry applied, since its own commit
    /// fences it (a write that ends up writing nothing passes the read guard in its entity).
    async fn barrier<A>(
        &self,
        log: &dyn ShardLog,
        shard: ShardId,
        read: bool,
        timeout: Duration,
    ) -> Result<(), Attempt<A>> {
        let barrier = match (read, self.unguarded_reads) {
            (true, true) => return Ok(()),
            (true, false) => log.read_barrier(shard),
            (false, _) => log.write_barrier(shard),
        };
        match tokio::time::timeout(timeout, barrier).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(StoreError::NotLeader { leader, .. })) => {
                Err(Attempt::Elsewhere { leader, reason: format!("shard {shard} is changing leaders") })
            }
            Ok(Err(e)) => Err(Attempt::Done(Err(ApiError::Unavailable(e.to_string())))),
            Err(_) => Err(Attempt::Elsewhere {
                leader: None,
                reason: format!("shard {shard} did not confirm its leader in time"),
            }),
        }
    }

    /// Checks a signed call's session on the user's entity of this node's shard. A refusal is decided from
    /// state without writing, so unless the call is read-guarded already it passes the read guard first.
    async fn check_session<A>(
        &self,
        log: &dyn ShardLog,
        actor: &ActorRef<ShardMsg>,
        spec: Spec<'_>,
        read_guarded: bool,
        timeout: Duration,
    ) -> Result<(), Attempt<A>> {
        let (shard, me) = (spec.shard, self.me().to_owned());
        let Some(session) = spec.session else { return Ok(()) };
        let (tx, rx) = oneshot();
        // Its guard is the operation's, which runs next in the same leadership: a read guard, a commit,
        // or the guard of a command that writes nothing.
        let cmd = Cmd::new(session.check.clone(), tx.into(), false).guarded();
        if actor.cast(ShardMsg::Call(LocalCall::User(session.user_id.clone(), cmd))).is_err() {
            return Err(Attempt::Elsewhere { leader: Some(me), reason: format!("shard {shard} is restarting") });
        }
        let refusal = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(_))) => return Ok(()),
            Ok(Ok(Err(ShardError::NotLeader(moved)))) => {
                return Err(Attempt::Elsewhere {
                    leader: moved.leader,
                    reason: format!("shard {shard} is changing leaders"),
                })
            }
            Ok(Ok(Err(ShardError::Api(ApiError::NotFound(_))))) => ApiError::Unauthorized,
            Ok(Ok(Err(ShardError::Api(e)))) => e,
            // A session check is safe to repeat.
            Ok(Err(_)) | Err(_) => {
                return Err(Attempt::Elsewhere {
                    leader: Some(me),
                    reason: format!("shard {shard}'s session check did not answer"),
                })
            }
        };
        if !read_guarded {
            self.barrier(log, shard, true, timeout).await?;
        }
        Err(Attempt::Done(Err(refusal)))
    }

    /// Runs `op` on this node's shard actor, after the barrier its kind needs (and a signed call's
    /// session check).
    pub async fn execute_local<O: LocalOp>(
        &self,
        spec: Spec<'_>,
        key: String,
        op: O,
        timeout: Duration,
    ) -> Attempt<O::Answer> {
        let (shard, fault) = (spec.shard, spec.fault);
        let me = self.me().to_owned();
        let again = |reason: String| Attempt::Elsewhere { leader: Some(me.clone()), reason };
        let (Some(local), Some(table)) = (&self.control.local, &self.table) else {
            return Attempt::Elsewhere { leader: None, reason: format!("{} holds no shards", self.me()) };
        };
        if let Err(attempt) = self.barrier(local.log.as_ref(), shard, O::READ, timeout).await {
            return attempt;
        }
        let read_guarded = O::READ && !self.unguarded_reads;
        let Some(actor) = table.get(shard) else { return again(format!("shard {shard} is restarting")) };
        if let Err(attempt) = self.check_session(local.log.as_ref(), &actor, spec, read_guarded, timeout).await {
            return attempt;
        }
        let (read, retry_safe, kind) = (O::READ, op.retry_safe(), O::ENTITY.as_str());
        let (tx, rx) = oneshot();
        let mut cmd = Cmd::new(op, tx.into(), fault == Some(Fault::Panic));
        if read_guarded {
            cmd = cmd.guarded();
        }
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
        spec: Spec<'_>,
        key: String,
        op: O,
        timeout: Duration,
    ) -> Attempt<O::Answer> {
        let Some(remote) = &self.control.remote else {
            return Attempt::Elsewhere { leader: None, reason: format!("no transport to reach {node}") };
        };
        let shard = spec.shard;
        let retry_safe = op.retry_safe();
        let meta = CallMeta { timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32, fault: spec.fault };
        let call = op.into_call(key);
        let request = match spec.session {
            Some(session) => Request::Signed { shard, session: session.clone(), call, meta },
            None => Request::Shard { shard, call, meta },
        };
        match remote.call(node, codec::encode_wire(&request), timeout).await {
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
