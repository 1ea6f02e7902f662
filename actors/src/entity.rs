//! The generic entity actor: one per live entity (a user, an order, an email claim), a local child of its
//! shard. It loads its state on activation, handles one command at a time (so each entity is a single
//! writer), and turns each change into a log entry that it awaits before replying: nothing is
//! acknowledged before it is durable.
//!
//! A command carries one typed operation and a reply port of that operation's answer type ([`Cmd::new`]
//! takes `O` and `RpcReplyPort<Answer<O>>`, and only kinds that handle `O` accept it), so a handler that
//! answered the wrong type would not compile.

use std::future::Future;
use std::marker::PhantomData;
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
}

impl Settings {
    /// Whether creates ignore idempotency records: only ever in a test build asked to break I5.
    pub fn breaks_idempotency(&self) -> bool {
        #[cfg(feature = "failpoints")]
        return self.break_idempotency;
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

impl EntityCtx {
    pub async fn commit(&self, entry: LogEntry) -> Result<LogIndex, ShardError> {
        self.log.append(self.shard, entry).await.map_err(ShardError::from)
    }
}

/// One kind of entity: its state and how it loads.
pub trait EntityKind: Send + Sync + 'static {
    /// The `kind` label of metrics and logs.
    const KIND: &'static str;
    type State: Send + Sync + 'static;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Self::State, StoreError>;
}

/// An entity kind that carries out operation `O`.
pub trait Handles<O: Op>: EntityKind {
    fn handle(ctx: &EntityCtx, key: &str, state: &mut Self::State, op: O) -> impl Future<Output = Answer<O>> + Send;
}

/// One operation and the port its answer goes to, with their types erased behind one trait so that a
/// kind's mailbox holds commands of every operation it handles.
trait Erased<K: EntityKind>: Send {
    fn run<'a>(self: Box<Self>, ctx: &'a EntityCtx, key: &'a str, state: &'a mut K::State) -> BoxFuture<'a, ()>;
    fn fail(self: Box<Self>, error: ShardError);
}

struct Typed<O: Op> {
    op: O,
    reply: RpcReplyPort<Answer<O>>,
}

impl<K: Handles<O>, O: Op> Erased<K> for Typed<O> {
    fn run<'a>(self: Box<Self>, ctx: &'a EntityCtx, key: &'a str, state: &'a mut K::State) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let answer = K::handle(ctx, key, state, self.op).await;
            // The caller may have given up waiting; the outcome stands all the same.
            let _ = self.reply.send(answer);
        })
    }

    fn fail(self: Box<Self>, error: ShardError) {
        let _ = self.reply.send(Err(error));
    }
}

/// A command to one entity of kind `K`.
pub struct Cmd<K: EntityKind> {
    inner: Box<dyn Erased<K>>,
    /// Test-only: the entity panics instead of acting (honoured only where the node injects panics).
    panic: bool,
}

impl<K: EntityKind> Cmd<K> {
    pub fn new<O: Op>(op: O, reply: RpcReplyPort<Answer<O>>, panic: bool) -> Self
    where
        K: Handles<O>,
    {
        Cmd { inner: Box::new(Typed { op, reply }), panic }
    }

    /// Answers the command with `error` without running it.
    pub fn fail(self, error: ShardError) {
        self.inner.fail(error);
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

pub struct EntityArgs {
    pub ctx: Arc<EntityCtx>,
    pub key: String,
}

pub struct EntityState<K: EntityKind> {
    ctx: Arc<EntityCtx>,
    key: String,
    state: K::State,
}

impl<K: EntityKind> Actor for EntityActor<K> {
    type Msg = EntityMsg<K>;
    type State = EntityState<K>;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let state = K::load(&args.ctx, &args.key)?;
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
                cmd.inner.run(&st.ctx, &st.key, &mut st.state).await;
            }
            EntityMsg::Stop => myself.stop(Some("passivated".into())),
        }
        Ok(())
    }
}
