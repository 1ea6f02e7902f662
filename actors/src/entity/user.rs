//! The user entity: the account, its sessions, its idempotency keys and its order index. Everything that
//! belongs to one user lives in that user's shard, so each of these operations is one log entry.

use std::collections::BTreeMap;

use playground_proto::ops::{
    Authenticate, CreateOrder, CreateSession, CreateUser, Credentials, DeleteSession, DeleteUser, GetUser, ListOrders,
    ListSessions, OrderCreated, OrderList, OwnsEmail, UpdateAccount, UpdateUser, UserChangeSet, UserUpdated,
};
use playground_proto::{
    email_key, new_id, now_millis, ApiError, HistoryEntry, IdempotencyRecord, LogEntry, Millis, NewOrder, OrderRecord,
    OrderStatus, SessionRecord, ShardError, UserRecord, UserSlot,
};
use shardlog::StoreError;

use super::{Answer, EntityCtx, EntityKind, Handles};

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

    fn load(ctx: &EntityCtx, key: &str) -> Result<UserState, StoreError> {
        let slot = ctx.store.get::<UserSlot>(ctx.shard, &user_key(key))?;
        let sessions: BTreeMap<String, SessionRecord> =
            ctx.store.scan_all::<SessionRecord>(ctx.shard, &format!("s/{key}/"))?.into_iter().collect();
        let persisted_seen = sessions.iter().map(|(k, s)| (k.clone(), s.last_seen_at)).collect();
        Ok(UserState { slot, sessions, persisted_seen })
    }

    fn is_absent(state: &UserState) -> bool {
        state.slot.is_none() && state.sessions.is_empty()
    }
}

impl Handles<CreateUser> for UserKind {
    // Creating is what an absent user is for.
    const ABSENT_NOOP: bool = false;

    async fn handle(ctx: &EntityCtx, _key: &str, st: &mut UserState, op: CreateUser) -> Answer<CreateUser> {
        create(ctx, st, op.user).await
    }
}

impl Handles<GetUser> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(_ctx: &EntityCtx, _key: &str, st: &mut UserState, _op: GetUser) -> Answer<GetUser> {
        Ok(st.active()?.clone())
    }
}

impl Handles<UpdateUser> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, _key: &str, st: &mut UserState, op: UpdateUser) -> Answer<UpdateUser> {
        update(ctx, st, op.changes, op.if_match, op.now, None).await
    }
}

impl Handles<UpdateAccount> for UserKind {
    // An absent user holds no session, so the change is refused before anything is written.
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, _key: &str, st: &mut UserState, op: UpdateAccount) -> Answer<UpdateAccount> {
        // A session revoked while its request was on the way (by a password change elsewhere) must not
        // get to change the account after all.
        if !st.sessions.contains_key(&op.keep_session) {
            return Err(ApiError::Unauthorized.into());
        }
        if op.proven_hash.is_some_and(|h| st.active().map(|u| u.password_hash != h).unwrap_or(true)) {
            return Err(ApiError::CurrentPasswordRequired.into());
        }
        update(ctx, st, op.changes, op.if_match, op.now, Some(&op.keep_session)).await
    }
}

impl Handles<DeleteUser> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, _op: DeleteUser) -> Answer<DeleteUser> {
        delete(ctx, key, st).await
    }
}

impl Handles<OwnsEmail> for UserKind {
    // An absent user is fenced, which writes its slot.
    const ABSENT_NOOP: bool = false;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: OwnsEmail) -> Answer<OwnsEmail> {
        owns_email(ctx, key, st, &op.email_key, op.now).await
    }
}

impl Handles<Credentials> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(_ctx: &EntityCtx, _key: &str, st: &mut UserState, op: Credentials) -> Answer<Credentials> {
        let user = st.active()?;
        if email_key(&user.email) == op.email_key {
            Ok(user.password_hash.clone())
        } else {
            Err(ApiError::NotFound("user".into()).into())
        }
    }
}

impl Handles<CreateSession> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: CreateSession) -> Answer<CreateSession> {
        create_session(ctx, key, st, op.session, &op.password_hash).await
    }
}

impl Handles<Authenticate> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: Authenticate) -> Answer<Authenticate> {
        authenticate(ctx, key, st, &op.session_id, &op.verifier, op.now).await
    }
}

impl Handles<ListSessions> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(_ctx: &EntityCtx, _key: &str, st: &mut UserState, op: ListSessions) -> Answer<ListSessions> {
        st.active()?;
        let mut live: Vec<SessionRecord> = st.sessions.values().filter(|s| s.expires_at > op.now).cloned().collect();
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.session_id.cmp(&a.session_id)));
        Ok(live)
    }
}

impl Handles<DeleteSession> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: DeleteSession) -> Answer<DeleteSession> {
        delete_session(ctx, key, st, &op.session_id).await
    }
}

impl Handles<CreateOrder> for UserKind {
    // Refused before any write (and before its idempotency record is looked up) when the user is not active.
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut UserState, op: CreateOrder) -> Answer<CreateOrder> {
        create_order(ctx, key, st, op.order, op.idempotency_key, op.now).await
    }
}

impl Handles<ListOrders> for UserKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, _st: &mut UserState, op: ListOrders) -> Answer<ListOrders> {
        list_orders(ctx, key, op.limit as usize, op.cursor)
    }
}

async fn create(ctx: &EntityCtx, st: &mut UserState, user: UserRecord) -> Result<UserRecord, ShardError> {
    match &st.slot {
        None => {}
        // Fenced by a registration that took the email over: this one lost the race.
        Some(UserSlot::Aborted { .. }) => return Err(ApiError::EmailTaken.into()),
        Some(_) => return Err(ApiError::Unavailable(format!("user id {} is already in use", user.id)).into()),
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
    keep_session: Option<&str>,
) -> Result<UserUpdated, ShardError> {
    let current = st.active()?;
    if if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
        return Err(ApiError::PreconditionFailed { current: current.version }.into());
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
    let revoked: Vec<String> = match (&changes.password_hash, keep_session) {
        (Some(_), Some(keep)) => st.sessions.keys().filter(|sid| *sid != keep).cloned().collect(),
        _ => vec![],
    };
    if let Some(hash) = changes.password_hash {
        next.password_hash = hash;
    }
    next.version += 1;
    next.updated_at = now.max(current.updated_at);
    let slot = UserSlot::Active(next.clone());
    let mut entry = LogEntry::default();
    entry.put(user_key(&next.id), &slot);
    for sid in &revoked {
        entry.delete(session_key(&next.id, sid));
    }
    ctx.commit(entry).await?;
    st.slot = Some(slot);
    for sid in &revoked {
        st.sessions.remove(sid);
        st.persisted_seen.remove(sid);
    }
    Ok(UserUpdated { user: next, released_email: released })
}

async fn delete(ctx: &EntityCtx, key: &str, st: &mut UserState) -> Result<String, ShardError> {
    let email = st.active()?.email.clone();
    let slot = UserSlot::Deleted { deleted_at: now_millis() };
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
) -> Result<bool, ShardError> {
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
) -> Result<SessionRecord, ShardError> {
    // A password changed between the check and now makes the login void.
    if st.active().map(|u| u.password_hash != password_hash).unwrap_or(true) {
        return Err(ApiError::InvalidCredentials.into());
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
) -> Result<SessionRecord, ShardError> {
    if st.active().is_err() {
        return Err(ApiError::Unauthorized.into());
    }
    let session = st.sessions.get_mut(session_id).ok_or(ApiError::Unauthorized)?;
    if !ct_eq(&session.verifier, verifier) || session.expires_at <= now {
        return Err(ApiError::Unauthorized.into());
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

async fn delete_session(ctx: &EntityCtx, key: &str, st: &mut UserState, session_id: &str) -> Result<(), ShardError> {
    st.active()?;
    if !st.sessions.contains_key(session_id) {
        return Err(ApiError::NotFound("session".into()).into());
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
) -> Result<OrderCreated, ShardError> {
    st.active()?;
    let fingerprint = order.fingerprint();
    // `break_idempotency` is a test-only switch that breaks I5 on purpose (see `FaultsConfig`).
    if let Some(k) = idem.as_ref().filter(|_| !ctx.settings.breaks_idempotency()) {
        if let Some(seen) = ctx.store.get::<IdempotencyRecord>(ctx.shard, &idempotency_key(key, k))? {
            if seen.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyKeyReused.into());
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

fn list_orders(ctx: &EntityCtx, key: &str, limit: usize, cursor: Option<String>) -> Result<OrderList, ShardError> {
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
    Ok(OrderList { orders, next_cursor: next })
}
