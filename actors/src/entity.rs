//! The generic entity actor: one per live entity (a user, an order, an email claim), a local child of its
//! shard. It loads its state on activation, handles one command at a time (so each entity is a single
//! writer), and turns each change into a log entry that it awaits before replying: nothing is
//! acknowledged before it is durable.
//!
//! A command carries one typed operation and a reply port of that operation's answer type ([`Cmd::new`]
//! takes `O` and `RpcReplyPort<Answer<O>>`, and only kinds that handle `O` accept it), so a handler that
//! answered the wrong type would not compile.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use playground_proto::{LogEntry, LogIndex, Op, ShardError, ShardId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use shardlog::{ShardLog, Store, StoreError};

mod email;
mod order;
mod user;

pub use email::EmailKind;
pub use order::OrderKind;
pub use user::UserKind;

/// What a shard call of operation `O` answers.
pub type Answer<O> = Result<<O as Op>::Answer, ShardError>;

/// What an entity needs from its node, shared by every entity of a shard.
pub struct EntityCtx {
    pub shard: ShardId,
    pub store: Arc<Store>,
    pub log: Arc<dyn ShardLog>,
    pub settings: Arc<Settings>,
}

/// Entity behaviour the node's configuration decides.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Test-only (`faults.panic_injection`): honour a call's `Fault::Panic`.
    #[cfg(feature = "failpoints")]
    pub panic_injection: bool,
    /// Test-only (`faults.break_idempotency`): creates ignore an existing idempotency record.
    #[cfg(feature = "failpoints")]
    pub break_idempotency: bool,
    /// Test-only (`faults.stale_reads`): reads and commands that write nothing skip the read guard.
    #[cfg(feature = "failpoints")]
    pub stale_reads: bool,
}

impl Settings {
    /// Whether creates ignore idempotency records: only ever in a test build asked to break I5.
    pub fn breaks_idempotency(&self) -> bool {
        #[cfg(feature = "failpoints")]
        return self.break_idempotency;
        #[cfg(not(feature = "failpoints"))]
        return false;
    }

    /// Whether answers that write nothing go out without the read guard: only ever in a test build asked
    /// to break linearizability.
    pub fn skips_read_guard(&self) -> bool {
        #[cfg(feature = "failpoints")]
        return self.stale_reads;
        #[cfg(not(feature = "failpoints"))]
        return false;
    }

    /// Whether a call that asks for a panic gets one.
    pub fn injects_panics(&self) -> bool {
        #[cfg(feature = "failpoints")]
        return self.panic_injection;
        #[cfg(not(feature = "failpoints"))]
        return false;
    }
}

tokio::task_local! {
    /// Whether the command running on this task has committed an entry.
    static COMMITTED: Cell<bool>;
}

impl EntityCtx {
    pub async fn commit(&self, entry: LogEntry) -> Result<LogIndex, ShardError> {
        let _ = COMMITTED.try_with(|c| c.set(true));
        self.log.append(self.shard, entry).await.map_err(ShardError::from)
    }

    /// The read guard of an answer decided from state alone: this node still leads, on its lease or by a
    /// read-index round, so what it read was current when the guard passed.
    pub async fn confirm_read(&self) -> Result<(), ShardError> {
        if self.settings.skips_read_guard() {
            return Ok(());
        }
        self.log.read_barrier(self.shard).await.map_err(ShardError::from)
    }
}

/// Runs one command's handler, and then, for a command that decided without writing (a read the router
/// did not guard, a refusal, a repeated idempotent create, a no-op), the read guard before its answer
/// goes out: such an answer is a read. A write that committed is fenced by its own commit in the leader's
/// term; a `guarded` command passed the guard after it arrived, before it ran.
async fn handle_guarded<K: Handles<O>, O: Op>(
    ctx: &EntityCtx,
    key: &str,
    state: &mut K::State,
    op: O,
    guarded: bool,
) -> Answer<O> {
    let (answer, committed) = COMMITTED
        .scope(Cell::new(false), async {
            let answer = K::handle(ctx, key, state, op).await;
            (answer, COMMITTED.with(Cell::get))
        })
        .await;
    let deposed = matches!(answer, Err(ShardError::NotLeader(_)));
    if guarded || committed || deposed {
        return answer;
    }
    ctx.confirm_read().await?;
    answer
}

/// One kind of entity: its state and how it loads.
pub trait EntityKind: Send + Sync + 'static {
    /// The `kind` label of metrics and logs.
    const KIND: &'static str;
    type State: Send + Sync + 'static;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Self::State, StoreError>;

    /// Whether `state` is what loads when nothing at all is stored under the entity's key.
    fn is_absent(state: &Self::State) -> bool;
}

/// An entity kind that carries out operation `O`.
pub trait Handles<O: Op>: EntityKind {
    /// Whether `O` writes nothing when the entity is absent ([`EntityKind::is_absent`]): then the shard
    /// answers it on the state it loaded, without activating an actor that would only hold "nothing"
    /// until its idle timeout. Declared by each handler, next to the code it describes, rather than
    /// derived from `Op::READ`: a session check is not a read, yet on an unknown user it writes nothing.
    const ABSENT_NOOP: bool;

    fn handle(ctx: &EntityCtx, key: &str, state: &mut Self::State, op: O) -> impl Future<Output = Answer<O>> + Send;
}

/// One operation and the port its answer goes to, with their types erased behind one trait so that a
/// kind's mailbox holds commands of every operation it handles.
trait Erased<K: EntityKind>: Send {
    /// Runs the operation and answers it; `in_flight` is released just before the answer goes out, so
    /// that a caller holding its answer finds the entity idle.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a EntityCtx,
        key: &'a str,
        state: &'a mut K::State,
        in_flight: Option<InFlight>,
        guarded: bool,
    ) -> BoxFuture<'a, ()>;
    fn fail(self: Box<Self>, error: ShardError);
}

struct Typed<O: Op> {
    op: O,
    reply: RpcReplyPort<Answer<O>>,
}

impl<K: Handles<O>, O: Op> Erased<K> for Typed<O> {
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a EntityCtx,
        key: &'a str,
        state: &'a mut K::State,
        in_flight: Option<InFlight>,
        guarded: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let answer = handle_guarded::<K, O>(ctx, key, state, self.op, guarded).await;
            drop(in_flight);
            // The caller may have given up waiting; the outcome stands all the same.
            let _ = self.reply.send(answer);
        })
    }

    fn fail(self: Box<Self>, error: ShardError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Counts the commands an entity instance has been handed and not yet finished: the shard evicts only
/// an instance at zero. Held by the command, so that however it ends (answered, failed, dropped with a
/// panicking entity) the count goes down.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A command to one entity of kind `K`.
pub struct Cmd<K: EntityKind> {
    inner: Box<dyn Erased<K>>,
    /// Test-only: the entity panics instead of acting (honoured only where the node injects panics).
    panic: bool,
    /// The operation's `Handles::ABSENT_NOOP`.
    absent_noop: bool,
    in_flight: Option<InFlight>,
    /// Whether the read guard passed after the command arrived ([`Cmd::guarded`]).
    guarded: bool,
}

impl<K: EntityKind> Cmd<K> {
    pub fn new<O: Op>(op: O, reply: RpcReplyPort<Answer<O>>, panic: bool) -> Self
    where
        K: Handles<O>,
    {
        Cmd {
            inner: Box::new(Typed { op, reply }),
            panic,
            absent_noop: <K as Handles<O>>::ABSENT_NOOP,
            in_flight: None,
            guarded: false,
        }
    }

    /// Marks the command as read-guarded: the read guard passed after it arrived, or a later step of the
    /// same call (a signed call's operation) is guarded, so it needs no guard of its own.
    pub fn guarded(mut self) -> Self {
        self.guarded = true;
        self
    }

    /// Answers the command with `error` without running it.
    pub fn fail(self, error: ShardError) {
        self.inner.fail(error);
    }

    /// Whether the shard may answer this command on an absent entity's state itself. A command that asks
    /// for an injected panic goes to an actor, where the panic is supervised, never to the shard.
    pub fn answerable_without_actor(&self) -> bool {
        self.absent_noop && !self.panic
    }

    /// Runs the command on `state`, outside any entity actor.
    pub async fn run_detached(self, ctx: &EntityCtx, key: &str, state: &mut K::State) {
        self.inner.run(ctx, key, state, self.in_flight, self.guarded).await;
    }

    /// Counts the command in `count` until it is done.
    pub fn track(&mut self, count: &Arc<AtomicUsize>) {
        self.in_flight = Some(InFlight::new(count));
    }
}

pub enum EntityMsg<K: EntityKind> {
    Command(Cmd<K>),
    /// Passivation: sent by the shard behind every command it forwarded, so the mailbox drains first.
    Stop,
}

// Local only: with ractor's `cluster` feature every message type says whether it can cross the wire.
impl<K: EntityKind> ractor::Message for EntityMsg<K> {}

pub struct EntityActor<K>(PhantomData<K>);

impl<K> Default for EntityActor<K> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct EntityArgs<K: EntityKind> {
    pub ctx: Arc<EntityCtx>,
    pub key: String,
    /// The state as the shard just loaded it; `None` loads it afresh (a restart after a failure).
    pub state: Option<K::State>,
}

pub struct EntityState<K: EntityKind> {
    ctx: Arc<EntityCtx>,
    key: String,
    state: K::State,
}

impl<K: EntityKind> Actor for EntityActor<K> {
    type Msg = EntityMsg<K>;
    type State = EntityState<K>;
    type Arguments = EntityArgs<K>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs<K>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let state = match args.state {
            Some(state) => state,
            None => K::load(&args.ctx, &args.key)?,
        };
        crate::metrics::ACTIVATIONS.with_label_values(&[K::KIND]).inc();
        Ok(EntityState { ctx: args.ctx, key: args.key, state })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EntityMsg::Command(cmd) => {
                if cmd.panic && st.ctx.settings.injects_panics() {
                    // The command's reply port drops with the unwinding stack: its caller learns the outcome
                    // is unknown, and nothing was written.
                    panic!("injected panic in {} entity {}", K::KIND, st.key);
                }
                cmd.inner.run(&st.ctx, &st.key, &mut st.state, cmd.in_flight, cmd.guarded).await;
            }
            EntityMsg::Stop => myself.stop(Some("passivated".into())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use playground_proto::ops::*;
    use playground_proto::{NewOrder, OrderAction, OrderItem, SessionRecord, UserRecord};

    use super::*;

    /// A log that accepts every entry and counts them.
    #[derive(Default)]
    struct CountingLog(AtomicU64);

    impl ShardLog for CountingLog {
        fn append(&self, _shard: ShardId, _entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>> {
            let index = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { Ok(index) })
        }
    }

    /// Runs `op` on an entity with nothing stored and says whether it appended anything; fails unless
    /// that matches what its handler declares in `ABSENT_NOOP`.
    async fn check<K: Handles<O>, O: Op>(op: O) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1).expect("store");
        let log = Arc::new(CountingLog::default());
        let ctx = EntityCtx { shard: 0, store, log: log.clone(), settings: Arc::new(Settings::default()) };
        let key = "01J0NOTHINGSTOREDHERE0000";
        let mut state = K::load(&ctx, key).expect("loads");
        assert!(K::is_absent(&state), "{} {key} loads as absent", K::KIND);
        let name = format!("{op:?}");
        let _ = K::handle(&ctx, key, &mut state, op).await;
        let wrote = log.0.load(Ordering::SeqCst) > 0;
        assert_eq!(
            wrote,
            !<K as Handles<O>>::ABSENT_NOOP,
            "{name} on an absent {}: wrote {wrote}, declared ABSENT_NOOP {}",
            K::KIND,
            <K as Handles<O>>::ABSENT_NOOP
        );
    }

    #[tokio::test]
    async fn every_operation_declares_truly_whether_it_writes_on_an_absent_entity() {
        let now = 1_700_000_000_000;
        let user = UserRecord {
            id: "01J0NOTHINGSTOREDHERE0000".into(),
            email: "a@example.com".into(),
            name: "Ada".into(),
            password_hash: "h".into(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let session = SessionRecord {
            session_id: "s".into(),
            user_id: user.id.clone(),
            verifier: vec![1],
            created_at: now,
            expires_at: now + 1000,
            last_seen_at: now,
        };
        let order = NewOrder {
            items: vec![OrderItem { sku: "A".into(), quantity: 1, unit_price_cents: 5 }],
            currency: "EUR".into(),
        };
        check::<UserKind, _>(CreateUser { user }).await;
        check::<UserKind, _>(GetUser).await;
        check::<UserKind, _>(UpdateUser { changes: UserChangeSet::default(), if_match: None, now }).await;
        let account = UpdateAccount {
            changes: UserChangeSet::default(),
            if_match: None,
            now,
            keep_session: "s".into(),
            proven_hash: Some("h".into()),
        };
        check::<UserKind, _>(account).await;
        check::<UserKind, _>(DeleteUser).await;
        check::<UserKind, _>(OwnsEmail { email_key: "a@example.com".into(), now }).await;
        check::<UserKind, _>(Credentials { email_key: "a@example.com".into() }).await;
        check::<UserKind, _>(CreateSession { session, password_hash: "h".into() }).await;
        check::<UserKind, _>(Authenticate { session_id: "s".into(), verifier: vec![1], now }).await;
        check::<UserKind, _>(ListSessions { now }).await;
        check::<UserKind, _>(DeleteSession { session_id: "s".into() }).await;
        check::<UserKind, _>(CreateOrder { order: order.clone(), idempotency_key: Some("k".into()), now }).await;
        check::<UserKind, _>(CreateOrder { order, idempotency_key: None, now }).await;
        check::<UserKind, _>(ListOrders { limit: 10, cursor: None }).await;
        check::<OrderKind, _>(GetOrder { user_id: "u".into() }).await;
        let pay = TransitionOrder { user_id: "u".into(), action: OrderAction::Pay, if_match: None, now };
        check::<OrderKind, _>(pay).await;
        check::<EmailKind, _>(ClaimEmail { user_id: "u".into(), now }).await;
        check::<EmailKind, _>(TakeoverEmail { from: "u".into(), to: "v".into(), now }).await;
        check::<EmailKind, _>(LookupEmail).await;
        check::<EmailKind, _>(ReleaseEmail { user_id: "u".into() }).await;
    }
}
