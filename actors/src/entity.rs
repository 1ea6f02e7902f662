//! The generic entity actor: one per live entity (a user, an order, an email claim), a local child of its
//! shard. It loads its state on activation, handles one command at a time (so each entity is a single
//! writer), and turns each change into a log entry that it awaits before replying: nothing is
//! acknowledged before it is durable.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, StoreError};
use crate::ids::ShardId;
use crate::model::{EmailClaim, OrderRecord, SessionRecord, UserRecord};
use crate::store::{LogEntry, LogIndex, ShardLog, Store};

mod email;
mod order;
mod user;

pub use email::{ClaimOutcome, EmailKind, EmailOp};
pub use order::{OrderKind, OrderOp};
pub use user::{OrderCreated, UserChangeSet, UserKind, UserOp};

/// What an entity answers. Crosses the transport: variants are only ever appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    User(UserRecord),
    /// The updated user, and the email it no longer holds (to release).
    UserUpdated(UserRecord, Option<String>),
    Text(String),
    Bool(bool),
    Session(SessionRecord),
    Sessions(Vec<SessionRecord>),
    Done,
    OrderCreated(OrderCreated),
    Orders(Vec<OrderRecord>, Option<String>),
    Order(OrderRecord),
    Claim(ClaimOutcome),
    MaybeClaim(Option<EmailClaim>),
}

/// A command to one entity: what to do, and where the answer goes.
pub struct Cmd<Op> {
    pub op: Op,
    pub reply: RpcReplyPort<Result<Reply, ApiError>>,
}

/// What an entity needs from its node, shared by every entity of a shard.
pub struct EntityCtx {
    pub shard: ShardId,
    pub store: Arc<Store>,
    pub log: Arc<dyn ShardLog>,
    pub settings: Arc<Settings>,
}

/// Entity behaviour the node's configuration decides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Test-only fault injection: honour `inject_panic` on commands. Off by default.
    pub panic_injection: bool,
    /// Test-only, never enabled in production: creates ignore an existing idempotency record.
    pub break_idempotency: bool,
}

impl EntityCtx {
    pub async fn commit(&self, entry: LogEntry) -> Result<LogIndex, ApiError> {
        self.log.append(self.shard, entry).await.map_err(ApiError::from)
    }
}

/// One kind of entity: its state, how it loads, and how it handles an operation.
pub trait EntityKind: Send + Sync + 'static {
    /// The `kind` label of metrics and logs.
    const KIND: &'static str;
    type State: Send + Sync + 'static;
    type Op: Send + 'static;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Self::State, StoreError>;

    fn handle(
        ctx: &EntityCtx,
        key: &str,
        state: &mut Self::State,
        op: Self::Op,
    ) -> impl Future<Output = Result<Reply, ApiError>> + Send;
}

pub enum EntityMsg<C> {
    Command {
        cmd: C,
        inject_panic: bool,
    },
    /// Passivation: sent by the shard behind every command it forwarded, so the mailbox drains first.
    Stop,
}

// Local only: with ractor's `cluster` feature every message type says whether it can cross the wire.
impl<C: Send + 'static> ractor::Message for EntityMsg<C> {}

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
    type Msg = EntityMsg<Cmd<K::Op>>;
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
            EntityMsg::Command { cmd, inject_panic } => {
                if inject_panic && st.ctx.settings.panic_injection {
                    // The command's reply port drops with the unwinding stack: its caller learns the outcome
                    // is unknown, and nothing was written.
                    panic!("injected panic in {} entity {}", K::KIND, st.key);
                }
                let answer = K::handle(&st.ctx, &st.key, &mut st.state, cmd.op).await;
                // The caller may have given up waiting; the outcome stands all the same.
                let _ = cmd.reply.send(answer);
            }
            EntityMsg::Stop => myself.stop(Some("passivated".into())),
        }
        Ok(())
    }
}
