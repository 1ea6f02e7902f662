//! The user entity: the account, its sessions, its idempotency keys and its order index. Everything that
//! belongs to one user lives in that user's shard, so each of these operations is one log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EntityCtx, EntityKind, Reply};
use crate::error::{ApiError, StoreError};
use crate::ids::{new_id, Millis};
use crate::model::{HistoryEntry, IdempotencyRecord, OrderRecord, OrderStatus, SessionRecord, UserRecord, UserSlot};
use crate::store::LogEntry;
use crate::validate::{email_key, NewOrder};

/// `last_seen_at` is kept in memory and written through at most this often: a session check is a read,
/// and making every read a durable write would halve throughput for a field nobody audits.
const LAST_SEEN_PERSIST_MS: Millis = 60_000;

pub(crate) fn user_key(id: &str) -> String {
    format!("u/{id}")
}
fn session_key(user: &str, session: &str) -> String {
    format!("s/{user}/{session}")
}
fn idempotency_key(user: &str, key: &str) -> String {
    format!("i/{user}/{key}")
}
pub(crate) fn order_key(id: &str) -> String {
    format!("o/{id}")
}
pub(crate) fn order_index_prefix(user: &str) -> String {
    format!("x/{user}/")
}

/// Changes to a user, validated and with the password already hashed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserChangeSet {
    pub email: Option<String>,
    pub name: Option<String>,
    pub password_hash: Option<String>,
}

/// The result of an order create: the order as it is now, and whether this call created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order: OrderRecord,
    pub created: bool,
}

/// What a user entity is asked to do. Crosses the transport: variants are only ever appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum UserOp {
    Create {
        user: UserRecord,
    },
    Get,
    Update {
        changes: UserChangeSet,
        if_match: Option<Vec<u64>>,
        now: Millis,
    },
    /// Deletes the user and its sessions; answers the email to release.
    Delete,
    /// Whether this user holds `email_key` now. A user that does not exist yet is fenced: it can never be
    /// created afterwards, so an email claim it left behind can be taken over safely.
    OwnsEmail {
        email_key: String,
        now: Millis,
    },
    /// The password hash, for a login whose email claim points here.
    Credentials {
        email_key: String,
    },
    CreateSession {
        session: SessionRecord,
        password_hash: String,
    },
    Authenticate {
        session_id: String,
        verifier: Vec<u8>,
        now: Millis,
    },
    ListSessions {
        now: Millis,
    },
    DeleteSession {
        session_id: String,
    },
    CreateOrder {
        order: NewOrder,
        idempotency_key: Option<String>,
        now: Millis,
    },
    ListOrders {
        limit: u32,
        cursor: Option<String>,
    },
}

pub struct UserState {
    slot: Option<UserSlot>,
    sessions: BTreeMap<String, SessionRecord>,
    /// `last_seen_at` as last written, per session.
    persisted_seen: BTreeMap<String, Millis>,
}

impl UserState {
    fn active(&self) -> Result<&UserRecord, ApiError> {
        match &self.slot {
            Some(UserSlot::Active(u)) => Ok(u),
            _ => Err(ApiError::NotFound("user".into())),
        }
    }
}

pub struct UserKind;

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl EntityKind for UserKind {
    const KIND: &'static str = "user";
    type State = UserState;
    type Op = UserOp;

    fn load(ctx: &EntityCtx, key: &str) -> Result<UserState, StoreError> {
        let slot = ctx.store.get::<UserSlot>(ctx.shard, &user_key(key))?;
        let sessions: BTreeMap<String, SessionRecord> =
            ctx.store.scan_all::<SessionRecord>(ctx.shard, &format!("s/{key}/"))?.into_iter().collect();
        let persisted_seen = sessions.iter().map(|(k, s)| (k.clone(), s.last_seen_at)).collect();
        Ok(UserState { slot, sessions, persisted_seen })
    }

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: UserOp) -> Result<Reply, ApiError> {
        match op {
            UserOp::Create { user } => create(ctx, st, user).await.map(Reply::User),
            UserOp::Get => st.active().cloned().map(Reply::User),
            UserOp::Update { changes, if_match, now } => {
                update(ctx, st, changes, if_match, now).await.map(|(u, old)| Reply::UserUpdated(u, old))
            }
            UserOp::Delete => delete(ctx, key, st).await.map(Reply::Text),
            UserOp::OwnsEmail { email_key: wanted, now } => {
                owns_email(ctx, key, st, &wanted, now).await.map(Reply::Bool)
            }
            UserOp::Credentials { email_key: wanted } => st.active().and_then(|u| {
                if email_key(&u.email) == wanted {
                    Ok(Reply::Text(u.password_hash.clone()))
                } else {
                    Err(ApiError::NotFound("user".into()))
                }
            }),
            UserOp::CreateSession { session, password_hash } => {
                create_session(ctx, key, st, session, &password_hash).await.map(Reply::Session)
            }
            UserOp::Authenticate { session_id, verifier, now } => {
                authenticate(ctx, key, st, &session_id, &verifier, now).await.map(Reply::Session)
            }
            UserOp::ListSessions { now } => st.active().map(|_| {
                let mut live: Vec<SessionRecord> =
                    st.sessions.values().filter(|s| s.expires_at > now).cloned().collect();
                live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.session_id.cmp(&a.session_id)));
                Reply::Sessions(live)
            }),
            UserOp::DeleteSession { session_id } => {
                delete_session(ctx, key, st, &session_id).await.map(|()| Reply::Done)
            }
            UserOp::CreateOrder { order, idempotency_key, now } => {
                create_order(ctx, key, st, order, idempotency_key, now).await.map(Reply::OrderCreated)
            }
            UserOp::ListOrders { limit, cursor } => {
                list_orders(ctx, key, limit as usize, cursor).map(|(orders, next)| Reply::Orders(orders, next))
            }
        }
    }
}

async fn create(ctx: &EntityCtx, st: &mut UserState, user: UserRecord) -> Result<UserRecord, ApiError> {
    match &st.slot {
        None => {}
        // Fenced by a registration that took the email over: this one lost the race.
        Some(UserSlot::Aborted { .. }) => return Err(ApiError::EmailTaken),
        Some(_) => return Err(ApiError::Unavailable(format!("user id {} is already in use", user.id))),
    }
    let slot = UserSlot::Active(user.clone());
    let mut entry = LogEntry::default();
    entry.put(user_key(&user.id), &slot);
    ctx.commit(entry).await?;
    st.slot = Some(slot);
    Ok(user)
}

async fn update(
    ctx: &EntityCtx,
    st: &mut UserState,
    changes: UserChangeSet,
    if_match: Option<Vec<u64>>,
    now: Millis,
) -> Result<(UserRecord, Option<String>), ApiError> {
    let current = st.active()?;
    if if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
        return Err(ApiError::PreconditionFailed { current: current.version });
    }
    let mut next = current.clone();
    let mut released = None;
    if let Some(email) = changes.email {
        if email_key(&email) != email_key(&current.email) {
            released = Some(current.email.clone());
        }
        next.email = email;
    }
    if let Some(name) = changes.name {
        next.name = name;
    }
    if let Some(hash) = changes.password_hash {
        next.password_hash = hash;
    }
    next.version += 1;
    next.updated_at = now.max(current.updated_at);
    let slot = UserSlot::Active(next.clone());
    let mut entry = LogEntry::default();
    entry.put(user_key(&next.id), &slot);
    ctx.commit(entry).await?;
    st.slot = Some(slot);
    Ok((next, released))
}

async fn delete(ctx: &EntityCtx, key: &str, st: &mut UserState) -> Result<String, ApiError> {
    let email = st.active()?.email.clone();
    let slot = UserSlot::Deleted { deleted_at: crate::ids::now_millis() };
    let mut entry = LogEntry::default();
    entry.put(user_key(key), &slot);
    for sid in st.sessions.keys() {
        entry.delete(session_key(key, sid));
    }
    ctx.commit(entry).await?;
    st.slot = Some(slot);
    st.sessions.clear();
    st.persisted_seen.clear();
    Ok(email)
}

async fn owns_email(
    ctx: &EntityCtx,
    key: &str,
    st: &mut UserState,
    wanted: &str,
    now: Millis,
) -> Result<bool, ApiError> {
    match &st.slot {
        Some(UserSlot::Active(u)) => Ok(email_key(&u.email) == wanted),
        Some(_) => Ok(false),
        None => {
            let slot = UserSlot::Aborted { at: now };
            let mut entry = LogEntry::default();
            entry.put(user_key(key), &slot);
            ctx.commit(entry).await?;
            st.slot = Some(slot);
            Ok(false)
        }
    }
}

async fn create_session(
    ctx: &EntityCtx,
    key: &str,
    st: &mut UserState,
    session: SessionRecord,
    password_hash: &str,
) -> Result<SessionRecord, ApiError> {
    // A password changed between the check and now makes the login void.
    if st.active().map(|u| u.password_hash != password_hash).unwrap_or(true) {
        return Err(ApiError::InvalidCredentials);
    }
    let mut entry = LogEntry::default();
    entry.put(session_key(key, &session.session_id), &session);
    let expired: Vec<String> =
        st.sessions.values().filter(|s| s.expires_at <= session.created_at).map(|s| s.session_id.clone()).collect();
    for sid in &expired {
        entry.delete(session_key(key, sid));
    }
    ctx.commit(entry).await?;
    for sid in &expired {
        st.sessions.remove(sid);
        st.persisted_seen.remove(sid);
    }
    st.persisted_seen.insert(session.session_id.clone(), session.last_seen_at);
    st.sessions.insert(session.session_id.clone(), session.clone());
    Ok(session)
}

async fn authenticate(
    ctx: &EntityCtx,
    key: &str,
    st: &mut UserState,
    session_id: &str,
    verifier: &[u8],
    now: Millis,
) -> Result<SessionRecord, ApiError> {
    if st.active().is_err() {
        return Err(ApiError::Unauthorized);
    }
    let session = st.sessions.get_mut(session_id).ok_or(ApiError::Unauthorized)?;
    if !ct_eq(&session.verifier, verifier) || session.expires_at <= now {
        return Err(ApiError::Unauthorized);
    }
    session.last_seen_at = session.last_seen_at.max(now);
    let seen = session.clone();
    let persisted = st.persisted_seen.get(session_id).copied().unwrap_or(0);
    if now - persisted >= LAST_SEEN_PERSIST_MS {
        let mut entry = LogEntry::default();
        entry.put(session_key(key, session_id), &seen);
        ctx.commit(entry).await?;
        st.persisted_seen.insert(session_id.to_owned(), now);
    }
    Ok(seen)
}

async fn delete_session(ctx: &EntityCtx, key: &str, st: &mut UserState, session_id: &str) -> Result<(), ApiError> {
    st.active()?;
    if !st.sessions.contains_key(session_id) {
        return Err(ApiError::NotFound("session".into()));
    }
    let mut entry = LogEntry::default();
    entry.delete(session_key(key, session_id));
    ctx.commit(entry).await?;
    st.sessions.remove(session_id);
    st.persisted_seen.remove(session_id);
    Ok(())
}

async fn create_order(
    ctx: &EntityCtx,
    key: &str,
    st: &mut UserState,
    order: NewOrder,
    idem: Option<String>,
    now: Millis,
) -> Result<OrderCreated, ApiError> {
    st.active()?;
    let fingerprint = order.fingerprint();
    // `break_idempotency` is a test-only switch that breaks I5 on purpose (see `FaultsConfig`).
    if let Some(k) = idem.as_ref().filter(|_| !ctx.settings.break_idempotency) {
        if let Some(seen) = ctx.store.get::<IdempotencyRecord>(ctx.shard, &idempotency_key(key, k))? {
            if seen.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyKeyReused);
            }
            // The order as it is now, which may have moved on since it was created.
            let existing = ctx.store.get::<OrderRecord>(ctx.shard, &order_key(&seen.order_id))?.ok_or_else(|| {
                ApiError::Unavailable(format!("order {} of an idempotency key is missing", seen.order_id))
            })?;
            return Ok(OrderCreated { order: existing, created: false });
        }
    }
    let record = OrderRecord {
        id: new_id(),
        user_id: key.to_owned(),
        total_cents: order.total_cents(),
        items: order.items,
        currency: order.currency,
        status: OrderStatus::Pending,
        created_at: now,
        updated_at: now,
        version: 1,
        history: vec![HistoryEntry { status: OrderStatus::Pending, at: now }],
    };
    let mut entry = LogEntry::default();
    entry.put(order_key(&record.id), &record);
    entry.put(format!("{}{}", order_index_prefix(key), record.id), &());
    if let Some(k) = &idem {
        entry.put(
            idempotency_key(key, k),
            &IdempotencyRecord { fingerprint, order_id: record.id.clone(), created_at: now },
        );
    }
    ctx.commit(entry).await?;
    Ok(OrderCreated { order: record, created: true })
}

fn list_orders(
    ctx: &EntityCtx,
    key: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<OrderRecord>, Option<String>), ApiError> {
    // One more than asked tells whether another page follows.
    let ids = ctx.store.scan_desc::<()>(ctx.shard, &order_index_prefix(key), cursor.as_deref(), limit + 1)?;
    let more = ids.len() > limit;
    let mut orders = Vec::with_capacity(limit);
    for (id, ()) in ids.into_iter().take(limit) {
        let order = ctx
            .store
            .get::<OrderRecord>(ctx.shard, &order_key(&id))?
            .ok_or_else(|| ApiError::Unavailable(format!("indexed order {id} is missing")))?;
        orders.push(order);
    }
    let next = if more { orders.last().map(|o| o.id.clone()) } else { None };
    Ok((orders, next))
}
