//! One struct per entity operation, each with its own answer type ([`Op::Answer`]), so that the compiler
//! checks which answer belongs to which call: a caller of `CreateOrder` gets an [`OrderCreated`] or an
//! error, never anything else. The wire enums ([`UserOp`], [`OrderOp`], [`EmailOp`]) wrap them for the
//! trip to the shard's leader; their variant index is the wire tag, so variants are only appended.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::Millis;
use crate::records::{EmailClaim, NewOrder, OrderAction, OrderRecord, SessionRecord, UserRecord};

/// The kinds of entity a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    User,
    Order,
    Email,
}

impl Entity {
    /// The `kind` label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::User => "user",
            Entity::Order => "order",
            Entity::Email => "email",
        }
    }
}

/// An operation on one entity, and what it answers.
pub trait Op: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// What the entity answers when the operation succeeds.
    type Answer: Serialize + DeserializeOwned + Debug + Send + 'static;
    /// The kind of entity that carries it out.
    const ENTITY: Entity;
    /// Whether it changes nothing, so that repeating it is always safe.
    const READ: bool;

    /// Whether a call whose outcome is unknown may be sent again: reads, and writes that carry their own
    /// deduplication.
    fn retry_safe(&self) -> bool;

    /// The call to the shard's entity `key`, as it travels.
    fn into_call(self, key: String) -> ShardCall;
}

/// Changes to a user, validated and with the password already hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChangeSet {
    pub email: Option<String>,
    pub name: Option<String>,
    pub password_hash: Option<String>,
}

/// Creates the user (its id is the entity's key). Answers the user as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub user: UserRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateUser {
    pub changes: UserChangeSet,
    pub if_match: Option<Vec<u64>>,
    pub now: Millis,
}

/// [`UpdateUser`] on behalf of the session `keep_session`, and with a new password also the end of every
/// other session of the user, in the same log entry: a stolen session does not outlive the password
/// change. Refused when `keep_session` ended meanwhile, or when the password changed since the current
/// password was checked against `proven_hash`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateAccount {
    pub changes: UserChangeSet,
    pub if_match: Option<Vec<u64>>,
    pub now: Millis,
    pub keep_session: String,
    pub proven_hash: Option<String>,
}

/// The updated user, and the email it no longer holds (for the caller to release).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user: UserRecord,
    pub released_email: Option<String>,
}

/// Deletes the user and its sessions. Answers the email to release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteUser;

/// Whether this user holds `email_key` now. A user that does not exist yet is fenced: it can never be
/// created afterwards, so an email claim it left behind can be taken over safely.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnsEmail {
    pub email_key: String,
    pub now: Millis,
}

/// The password hash, for a login whose email claim points here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub email_key: String,
}

/// Starts a session, unless the password changed since `password_hash` was checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    pub session: SessionRecord,
    pub password_hash: String,
}

/// Checks a session token's verifier; answers the live session. Its only write is `last_seen_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authenticate {
    pub session_id: String,
    pub verifier: Vec<u8>,
    pub now: Millis,
}

/// The user's live sessions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListSessions {
    pub now: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteSession {
    pub session_id: String,
}

/// Creates an order of the user's; with an idempotency key, a repeat answers the first order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateOrder {
    pub order: NewOrder,
    pub idempotency_key: Option<String>,
    pub now: Millis,
}

/// The result of an order create: the order as it is now, and whether this call created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order: OrderRecord,
    pub created: bool,
}

/// A page of the user's orders, newest first, after `cursor` (an order id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOrders {
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderList {
    pub orders: Vec<OrderRecord>,
    /// The cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// The order, if it belongs to `user_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetOrder {
    pub user_id: String,
}

/// Moves the order along its status machine (invariant I4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionOrder {
    pub user_id: String,
    pub action: OrderAction,
    pub if_match: Option<Vec<u64>>,
    pub now: Millis,
}

/// Makes `user_id` the holder of the email (the entity's key), unless someone else holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimEmail {
    pub user_id: String,
    pub now: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The email is now held by the caller (or already was).
    Claimed,
    HeldBy(EmailClaim),
}

/// Moves a claim from a holder that was found not to own the email any more; refused (false) if the
/// holder changed in between.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeoverEmail {
    pub from: String,
    pub to: String,
    pub now: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupEmail;

/// Gives the email up, if `user_id` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseEmail {
    pub user_id: String,
}

/// The answer type and routing facts of each operation.
macro_rules! ops {
    (@read read) => { true };
    (@read write) => { false };
    (@read retry) => { false };
    (@retry read, $op:ident) => { true };
    (@retry write, $op:ident) => { false };
    (@retry retry, $op:ident) => { true };
    ($($op:ident: $entity:ident -> $answer:ty, $how:ident;)+) => {
        $(
            impl Op for $op {
                type Answer = $answer;
                const ENTITY: Entity = Entity::$entity;
                const READ: bool = ops!(@read $how);

                fn retry_safe(&self) -> bool {
                    ops!(@retry $how, $op)
                }

                fn into_call(self, key: String) -> ShardCall {
                    ShardCall::$entity { key, op: self.into() }
                }
            }
        )+
    };
}

ops! {
    CreateUser: User -> UserRecord, write;
    GetUser: User -> UserRecord, read;
    UpdateUser: User -> UserUpdated, write;
    DeleteUser: User -> String, write;
    OwnsEmail: User -> bool, write;
    Credentials: User -> String, read;
    CreateSession: User -> SessionRecord, write;
    Authenticate: User -> SessionRecord, retry;
    ListSessions: User -> Vec<SessionRecord>, read;
    DeleteSession: User -> (), write;
    ListOrders: User -> OrderList, read;
    UpdateAccount: User -> UserUpdated, write;
    GetOrder: Order -> OrderRecord, read;
    TransitionOrder: Order -> OrderRecord, write;
    ClaimEmail: Email -> ClaimOutcome, write;
    TakeoverEmail: Email -> bool, write;
    LookupEmail: Email -> Option<EmailClaim>, read;
    ReleaseEmail: Email -> (), write;
}

impl Op for CreateOrder {
    type Answer = OrderCreated;
    const ENTITY: Entity = Entity::User;
    const READ: bool = false;

    /// An idempotency key makes a repeat answer the first order instead of creating another.
    fn retry_safe(&self) -> bool {
        self.idempotency_key.is_some()
    }

    fn into_call(self, key: String) -> ShardCall {
        ShardCall::User { key, op: self.into() }
    }
}

/// Calls `$callback!` with every operation, by entity, in wire order: the one list of operations, which
/// the wire enums here and the dispatch of the actor layer are both made from, so that the two cannot
/// disagree. Each line is `Variant => WireEnum { Op, … }`, `Variant` naming both the [`ShardCall`] and
/// the [`Entity`] variant.
#[macro_export]
macro_rules! for_each_op {
    ($callback:ident) => {
        $callback! {
            User => UserOp {
                CreateUser,
                GetUser,
                UpdateUser,
                DeleteUser,
                OwnsEmail,
                Credentials,
                CreateSession,
                Authenticate,
                ListSessions,
                DeleteSession,
                CreateOrder,
                ListOrders,
                UpdateAccount,
            }
            Order => OrderOp { GetOrder, TransitionOrder }
            Email => EmailOp { ClaimEmail, TakeoverEmail, LookupEmail, ReleaseEmail }
        }
    };
}

/// The wire enum of each kind of entity: what its entity is asked to do, as it travels.
macro_rules! wire_ops {
    ($($entity:ident => $wire:ident { $($op:ident),+ $(,)? })+) => {
        $(
            #[doc = concat!("What a ", stringify!($entity), " entity is asked to do, as it travels.")]
            #[derive(Debug, Clone, Serialize, Deserialize)]
            pub enum $wire {
                $($op($op)),+
            }

            impl $wire {
                /// The operation's name, for logs.
                pub fn name(&self) -> &'static str {
                    match self {
                        $($wire::$op(_) => stringify!($op)),+
                    }
                }

                pub fn is_read(&self) -> bool {
                    match self {
                        $($wire::$op(_) => <$op as Op>::READ),+
                    }
                }

                pub fn retry_safe(&self) -> bool {
                    match self {
                        $($wire::$op(op) => op.retry_safe()),+
                    }
                }
            }

            $(
                impl From<$op> for $wire {
                    fn from(op: $op) -> Self {
                        $wire::$op(op)
                    }
                }
            )+
        )+
    };
}

for_each_op!(wire_ops);

/// One call to one entity of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardCall {
    User { key: String, op: UserOp },
    Order { key: String, op: OrderOp },
    Email { key: String, op: EmailOp },
}

impl ShardCall {
    pub fn entity(&self) -> Entity {
        match self {
            ShardCall::User { .. } => Entity::User,
            ShardCall::Order { .. } => Entity::Order,
            ShardCall::Email { .. } => Entity::Email,
        }
    }

    /// Whether the call changes nothing.
    pub fn is_read(&self) -> bool {
        match self {
            ShardCall::User { op, .. } => op.is_read(),
            ShardCall::Order { op, .. } => op.is_read(),
            ShardCall::Email { op, .. } => op.is_read(),
        }
    }

    /// Whether a call whose outcome is unknown may be sent again.
    pub fn retry_safe(&self) -> bool {
        match self {
            ShardCall::User { op, .. } => op.retry_safe(),
            ShardCall::Order { op, .. } => op.retry_safe(),
            ShardCall::Email { op, .. } => op.retry_safe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::OrderItem;

    fn new_order() -> NewOrder {
        NewOrder {
            items: vec![OrderItem { sku: "A".into(), quantity: 1, unit_price_cents: 5 }],
            currency: "EUR".into(),
        }
    }

    #[test]
    fn only_reads_and_deduplicated_writes_are_retry_safe() {
        let read = GetOrder { user_id: "u".into() }.into_call("o".into());
        assert!(read.is_read() && read.retry_safe());
        assert_eq!(read.entity(), Entity::Order);
        let pay = TransitionOrder { user_id: "u".into(), action: OrderAction::Pay, if_match: None, now: 0 };
        let pay = pay.into_call("o".into());
        assert!(!pay.is_read() && !pay.retry_safe());
        let keyed = CreateOrder { order: new_order(), idempotency_key: Some("k".into()), now: 0 };
        assert!(keyed.retry_safe() && !CreateOrder { idempotency_key: None, ..keyed.clone() }.retry_safe());
        let check = Authenticate { session_id: "s".into(), verifier: vec![1], now: 0 }.into_call("u".into());
        assert!(!check.is_read() && check.retry_safe(), "a session check only writes last_seen_at");
    }
}
