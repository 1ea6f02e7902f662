//! The shard actor: the supervisor and router of one shard's entities. It activates an entity on its
//! first command, passivates it when idle, and restarts it (state reloaded from the store) when it fails.
//!
//! Memory stays bounded whatever keys clients name. A command for an entity with nothing stored whose
//! operation writes nothing there (`Handles::ABSENT_NOOP`: a read, a session check, an action on an
//! unknown order) is answered here on the state just loaded, and no actor is left holding "nothing".
//! Past `max_entities` live instances, the least recently used idle one (no command in flight) is
//! passivated as if its idle timeout had passed; it comes back from the store on its next command.
//!
//! Single-writer rule: at most one instance of an entity runs at a time. A passivating entity is sent
//! `Stop` behind the commands already forwarded to it; commands that arrive meanwhile wait here until it
//! has terminated, then go to a fresh instance.
//!
//! Leader-only service (invariant I2): a shard serves only while its log says this node leads it, and
//! drops every entity the moment the leadership term changes, so that no entity keeps state from a term
//! in which another node may have written. Entities come back on their next command, loaded from the
//! state machine.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use playground_proto::{ApiError, NotLeader, ShardError};

use crate::entity::{Cmd, EmailKind, EntityActor, EntityArgs, EntityCtx, EntityKind, EntityMsg, OrderKind, UserKind};
use crate::metrics;

/// More restarts than this within [`RESTART_WINDOW`] and an entity is left down until its next command,
/// so a poisoned record cannot spin a core.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// A command for one entity of the shard, by kind.
pub enum LocalCall {
    User(String, Cmd<UserKind>),
    Order(String, Cmd<OrderKind>),
    Email(String, Cmd<EmailKind>),
}

impl LocalCall {
    /// Answers the command with `error` without running it.
    pub fn fail(self, error: ShardError) {
        match self {
            LocalCall::User(_, cmd) => cmd.fail(error),
            LocalCall::Order(_, cmd) => cmd.fail(error),
            LocalCall::Email(_, cmd) => cmd.fail(error),
        }
    }
}

pub enum ShardMsg {
    /// Runs a command on its entity; the command carries its own reply port.
    Call(LocalCall),
    /// Passivates idle entities and drops them all when leadership moved; sent by the shard's own timer.
    Sweep,
}

// Local only: shards are reached through the node's transport endpoint, never as remote actors.
impl ractor::Message for ShardMsg {}

pub struct Shard;

pub struct ShardArgs {
    pub ctx: Arc<EntityCtx>,
    pub idle_timeout: Duration,
    /// Live entity instances kept at most (`limits.max_entities_per_shard`).
    pub max_entities: usize,
}

pub struct ShardState {
    ctx: Arc<EntityCtx>,
    /// The leadership term the live entities were activated in.
    term: u64,
    idle_timeout: Duration,
    max_entities: usize,
    users: Children<UserKind>,
    orders: Children<OrderKind>,
    emails: Children<EmailKind>,
}

struct Child<K: EntityKind> {
    actor: ActorRef<EntityMsg<K>>,
    last_used: Instant,
    stopping: bool,
    waiting: Vec<Cmd<K>>,
    restarts: VecDeque<Instant>,
    /// Commands handed to this instance and not finished yet: only an instance at zero is evicted.
    in_flight: Arc<AtomicUsize>,
}

struct Children<K: EntityKind> {
    live: HashMap<String, Child<K>>,
    keys: HashMap<ActorId, String>,
}

impl<K: EntityKind> Children<K> {
    fn new() -> Self {
        Self { live: HashMap::new(), keys: HashMap::new() }
    }

    async fn spawn(
        &mut self,
        sup: &ActorCell,
        ctx: &Arc<EntityCtx>,
        key: &str,
        state: Option<K::State>,
    ) -> Result<ActorRef<EntityMsg<K>>, ApiError> {
        let args = EntityArgs { ctx: ctx.clone(), key: key.to_owned(), state };
        match EntityActor::<K>::spawn_linked(None, EntityActor::default(), args, sup.clone()).await {
            Ok((actor, _)) => {
                self.keys.insert(actor.get_id(), key.to_owned());
                metrics::ACTIVE.with_label_values(&[K::KIND]).inc();
                Ok(actor)
            }
            Err(e) => {
                tracing::error!(kind = K::KIND, key, error = %e, "entity failed to activate");
                Err(ApiError::Unavailable(format!("the {} entity could not be loaded", K::KIND)))
            }
        }
    }

    async fn deliver(&mut self, sup: &ActorCell, ctx: &Arc<EntityCtx>, key: String, mut cmd: Cmd<K>) {
        if let Some(child) = self.live.get_mut(&key) {
            if child.stopping {
                child.waiting.push(cmd);
                return;
            }
            child.last_used = Instant::now();
            cmd.track(&child.in_flight);
            match child.actor.cast(EntityMsg::Command(cmd)) {
                Ok(()) => return,
                // The instance died and its failure is still on the way here: a new one takes over, which
                // is safe since a closed mailbox means the old one handles nothing more.
                // Its end is still accounted for by `ended`, which finds it in `keys`.
                Err(ractor::MessagingErr::SendErr(EntityMsg::Command(cmd))) => {
                    self.live.remove(&key);
                    return Box::pin(self.deliver(sup, ctx, key, cmd)).await;
                }
                Err(_) => return,
            }
        }
        // No instance runs, so none can be writing this key: what the store holds is the entity's state.
        let state = match K::load(ctx, &key) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(kind = K::KIND, key, error = %e, "entity failed to load");
                cmd.fail(ApiError::Unavailable(format!("the {} entity could not be loaded", K::KIND)).into());
                return;
            }
        };
        if K::is_absent(&state) && cmd.answerable_without_actor() {
            // The shard passed the same leadership check as for a live entity, so "absent" is as
            // linearizable as any other answer; the state is dropped with the command answered.
            metrics::ABSENT_ANSWERS.with_label_values(&[K::KIND]).inc();
            let mut state = state;
            cmd.run_detached(ctx, &key, &mut state).await;
            return;
        }
        self.activate(sup, ctx, key, vec![cmd], VecDeque::new(), Some(state)).await;
    }

    /// Starts an instance for `key` and hands it `commands`; if it cannot start, they are answered with
    /// the error.
    async fn activate(
        &mut self,
        sup: &ActorCell,
        ctx: &Arc<EntityCtx>,
        key: String,
        commands: Vec<Cmd<K>>,
        restarts: VecDeque<Instant>,
        state: Option<K::State>,
    ) {
        match self.spawn(sup, ctx, &key, state).await {
            Ok(actor) => {
                let in_flight = Arc::new(AtomicUsize::new(0));
                for mut cmd in commands {
                    cmd.track(&in_flight);
                    let _ = actor.cast(EntityMsg::Command(cmd));
                }
                let child =
                    Child { actor, last_used: Instant::now(), stopping: false, waiting: vec![], restarts, in_flight };
                self.live.insert(key, child);
            }
            Err(e) => {
                for cmd in commands {
                    cmd.fail(e.clone().into());
                }
            }
        }
    }

    /// Stops every instance now (not behind its mailbox) and answers what waits with `err`. Their ends
    /// still arrive as supervision events; with nothing waiting, nothing is restarted.
    fn stop_all(&mut self, err: ShardError) {
        for child in self.live.values_mut() {
            child.stopping = true;
            child.actor.stop(Some("leadership moved".into()));
            for cmd in child.waiting.drain(..) {
                cmd.fail(err.clone());
            }
        }
    }

    fn sweep(&mut self, idle: Duration) {
        let now = Instant::now();
        for child in self.live.values_mut() {
            if !child.stopping && now.duration_since(child.last_used) >= idle {
                child.stopping = true;
                let _ = child.actor.cast(EntityMsg::Stop);
            }
        }
    }

    /// Instances not on their way out.
    fn running(&self) -> usize {
        self.live.values().filter(|c| !c.stopping).count()
    }

    /// The least recently used instance with no command in flight that is not stopping already.
    fn least_recent_idle(&self) -> Option<(Instant, &str)> {
        self.live
            .iter()
            .filter(|(_, c)| !c.stopping && c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(key, c)| (c.last_used, key.as_str()))
            .min()
    }

    /// Passivates `key` to make room: `Stop` goes behind the mailbox, which holds no command since the
    /// instance is idle, and whatever arrives for it meanwhile waits for a fresh instance.
    fn evict(&mut self, key: &str) {
        if let Some(child) = self.live.get_mut(key) {
            child.stopping = true;
            let _ = child.actor.cast(EntityMsg::Stop);
            metrics::EVICTIONS.with_label_values(&[K::KIND]).inc();
        }
    }

    /// Handles the end of one of this kind's children; false when the actor is not one of them.
    async fn ended(&mut self, sup: &ActorCell, ctx: &Arc<EntityCtx>, id: ActorId, failure: Option<String>) -> bool {
        let Some(key) = self.keys.remove(&id) else { return false };
        metrics::ACTIVE.with_label_values(&[K::KIND]).dec();
        match &failure {
            Some(reason) => {
                metrics::RESTARTS.with_label_values(&[K::KIND]).inc();
                tracing::warn!(kind = K::KIND, key = %key, reason = %reason, "entity failed; restarting it with its stored state");
            }
            None => metrics::PASSIVATIONS.with_label_values(&[K::KIND]).inc(),
        }
        // An instance already replaced (see `deliver`) needs no more than the accounting above.
        if self.live.get(&key).is_none_or(|c| c.actor.get_id() != id) {
            return true;
        }
        let Some(mut child) = self.live.remove(&key) else { return true };
        let mut restart = !child.waiting.is_empty();
        if failure.is_some() {
            let now = Instant::now();
            child.restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            child.restarts.push_back(now);
            restart |= child.restarts.len() <= MAX_RESTARTS;
        }
        if !restart {
            return true;
        }
        let waiting = std::mem::take(&mut child.waiting);
        self.activate(sup, ctx, key, waiting, child.restarts, None).await;
        true
    }
}

impl ShardState {
    /// Stops every entity at once: the term changed, so what they hold in memory may be stale.
    fn drop_entities(&mut self, term: u64) {
        tracing::info!(
            shard = self.ctx.shard,
            from = self.term,
            to = term,
            "leadership term changed; dropping entities"
        );
        let err = || ShardError::NotLeader(NotLeader { shard: self.ctx.shard, leader: None });
        self.users.stop_all(err());
        self.orders.stop_all(err());
        self.emails.stop_all(err());
        self.term = term;
    }

    /// Passivates least recently used idle instances while more than `max_entities` run. With every
    /// instance busy the shard stays over the cap for a moment rather than cut a command short.
    fn enforce_cap(&mut self) {
        let total = self.users.live.len() + self.orders.live.len() + self.emails.live.len();
        if total <= self.max_entities {
            return;
        }
        let running = self.users.running() + self.orders.running() + self.emails.running();
        for _ in self.max_entities..running {
            let candidates = [
                self.users.least_recent_idle().map(|(t, k)| (t, 0, k.to_owned())),
                self.orders.least_recent_idle().map(|(t, k)| (t, 1, k.to_owned())),
                self.emails.least_recent_idle().map(|(t, k)| (t, 2, k.to_owned())),
            ];
            let Some((_, kind, key)) = candidates.into_iter().flatten().min() else { return };
            match kind {
                0 => self.users.evict(&key),
                1 => self.orders.evict(&key),
                _ => self.emails.evict(&key),
            }
        }
    }
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(&self, myself: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardState, ActorProcessingErr> {
        // Checking at a quarter of the idle timeout passivates within 1.25× of it.
        let every = (args.idle_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(30));
        myself.send_interval(every, || ShardMsg::Sweep);
        Ok(ShardState {
            term: args.ctx.log.leadership(args.ctx.shard).term,
            ctx: args.ctx,
            idle_timeout: args.idle_timeout,
            max_entities: args.max_entities,
            users: Children::new(),
            orders: Children::new(),
            emails: Children::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        let sup = myself.get_cell();
        match msg {
            ShardMsg::Call(call) => {
                let leadership = st.ctx.log.leadership(st.ctx.shard);
                if leadership.term != st.term {
                    st.drop_entities(leadership.term);
                }
                if !leadership.is_leader {
                    call.fail(NotLeader { shard: st.ctx.shard, leader: leadership.leader }.into());
                    return Ok(());
                }
                match call {
                    LocalCall::User(key, cmd) => st.users.deliver(&sup, &st.ctx, key, cmd).await,
                    LocalCall::Order(key, cmd) => st.orders.deliver(&sup, &st.ctx, key, cmd).await,
                    LocalCall::Email(key, cmd) => st.emails.deliver(&sup, &st.ctx, key, cmd).await,
                }
                st.enforce_cap();
            }
            ShardMsg::Sweep => {
                let term = st.ctx.log.leadership(st.ctx.shard).term;
                if term != st.term {
                    st.drop_entities(term);
                }
                st.users.sweep(st.idle_timeout);
                st.orders.sweep(st.idle_timeout);
                st.emails.sweep(st.idle_timeout);
                // Instances that were all busy when the cap was passed may be idle by now.
                st.enforce_cap();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardMsg>,
        evt: SupervisionEvent,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        let sup = myself.get_cell();
        let (id, failure) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            _ => return Ok(()),
        };
        let known = st.users.ended(&sup, &st.ctx, id, failure.clone()).await
            || st.orders.ended(&sup, &st.ctx, id, failure.clone()).await
            || st.emails.ended(&sup, &st.ctx, id, failure).await;
        if !known {
            tracing::warn!(actor = %id, "supervision event from an actor this shard does not know");
        }
        // A restart, or commands that waited for a stopping instance, may have started one more.
        st.enforce_cap();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use futures::future::BoxFuture;
    use playground_proto::ops::{CreateUser, GetUser};
    use playground_proto::{LogEntry, LogIndex, ShardId, UserRecord};
    use ractor::concurrency::oneshot;
    use shardlog::{LocalLog, ShardLog, Store, StoreError};
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::entity::Settings;

    /// The local log, except that its first append says it has begun and waits until the test opens
    /// the gate.
    struct GatedLog {
        inner: LocalLog,
        held: AtomicBool,
        begun: Arc<Notify>,
        gate: Arc<Semaphore>,
    }

    impl ShardLog for GatedLog {
        fn append(&self, shard: ShardId, entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>> {
            let hold = !self.held.swap(true, Ordering::SeqCst);
            let (begun, gate, inner) = (self.begun.clone(), self.gate.clone(), self.inner.append(shard, entry));
            Box::pin(async move {
                if hold {
                    begun.notify_one();
                    let _ = gate.acquire().await;
                }
                inner.await
            })
        }
    }

    fn user(id: &str) -> UserRecord {
        UserRecord {
            id: id.into(),
            email: format!("{id}@example.com"),
            name: id.into(),
            password_hash: "h".into(),
            created_at: 1,
            updated_at: 1,
            version: 1,
        }
    }

    fn activations() -> u64 {
        metrics::ACTIVATIONS.with_label_values(&["user"]).get()
    }

    async fn get(shard: &ActorRef<ShardMsg>, key: &str) -> Result<UserRecord, ShardError> {
        let (tx, rx) = oneshot();
        let cmd = Cmd::<UserKind>::new(GetUser, tx.into(), false);
        shard.cast(ShardMsg::Call(LocalCall::User(key.into(), cmd))).expect("the shard takes calls");
        rx.await.expect("an answer")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cap_evicts_an_idle_entity_never_one_with_a_command_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1).expect("store");
        let (begun, gate) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let log = GatedLog {
            inner: LocalLog::new(store.clone(), "n1"),
            held: AtomicBool::new(false),
            begun: begun.clone(),
            gate: gate.clone(),
        };
        let ctx = Arc::new(EntityCtx { shard: 0, store, log: Arc::new(log), settings: Arc::new(Settings::default()) });
        let args = ShardArgs { ctx, idle_timeout: Duration::from_secs(300), max_entities: 1 };
        let (shard, _) = Shard::spawn(None, Shard, args).await.expect("the shard starts");

        // "a" is created first, so it is the least recently used, but its write is held in flight.
        let (tx_a, rx_a) = oneshot();
        let create_a = Cmd::<UserKind>::new(CreateUser { user: user("a") }, tx_a.into(), false);
        shard.cast(ShardMsg::Call(LocalCall::User("a".into(), create_a))).expect("the shard takes calls");
        begun.notified().await;
        let (tx_b, rx_b) = oneshot();
        let create_b = Cmd::<UserKind>::new(CreateUser { user: user("b") }, tx_b.into(), false);
        shard.cast(ShardMsg::Call(LocalCall::User("b".into(), create_b))).expect("the shard takes calls");
        assert_eq!(rx_b.await.expect("an answer").expect("b is created").id, "b");

        // An absent user is answered without an actor, and the call makes the shard enforce its cap:
        // "b" is idle, "a" is not. The cap is enforced after the answer goes out: the answer to a second
        // call says that the shard is done with the first.
        for nobody in ["nobody", "nobody-else"] {
            assert_eq!(get(&shard, nobody).await.err(), Some(ApiError::NotFound("user".into()).into()));
        }
        gate.add_permits(1);
        assert_eq!(rx_a.await.expect("an answer").expect("a's write completes").id, "a");

        let before = activations();
        assert_eq!(get(&shard, "a").await.expect("a").name, "a");
        assert_eq!(activations(), before, "a was never evicted: it answers from its live instance");
        assert_eq!(get(&shard, "b").await.expect("b comes back from the store").email, "b@example.com");
        assert_eq!(activations(), before + 1, "b was evicted and loaded again");
        shard.stop(None);
    }
}
