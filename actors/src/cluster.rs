//! The cluster as its clients see it: every operation of the API, routed to the shard that owns it, on
//! whichever node leads that shard (`crate::router`). The gateway calls only this. Each call carries a
//! timeout; an answer that never comes is `timeout` (outcome unknown) for a write, and is retried for a
//! read. Every call names its operation's type, and gets that operation's answer back.
//!
//! API boundary: the methods of [`Cluster`], which take validated inputs and return stored records; the
//! gateway owns the HTTP shapes (request bodies, their rules, and the JSON views).

use std::sync::Arc;
use std::time::Duration;

use control_plane::{client, refresh};
use playground_proto::ops::{
    Authenticate, ClaimEmail, ClaimOutcome, CreateOrder, CreateSession, CreateUser, Credentials, DeleteSession,
    DeleteUser, GetOrder, GetUser, ListOrders, ListSessions, LookupEmail, OrderCreated, OrderList, OwnsEmail,
    ReleaseEmail, TakeoverEmail, TransitionOrder, UpdateAccount, UserChangeSet,
};
use playground_proto::{
    email_key, new_id, now_millis, shard_of, ApiError, Fault, Millis, NewOrder, OrderAction, OrderRecord, ReplicaOp,
    SessionCheck, SessionRecord, ShardId, ShardStatus, UserRecord,
};
use serde::Serialize;

use crate::metrics;
use crate::ops::LocalOp;
use crate::router::Router;
use crate::security::{Passwords, Tokens};

/// Per-request options that are not part of the API.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Test-only: a fault the entity that handles this request injects, where the node allows it.
    pub fault: Option<Fault>,
}

/// A caller as its bearer token names it. The token's signature is checked here; whether its session is
/// live is checked by the user's shard with every call made on the caller's behalf (a signed call), so
/// one message does both.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    session_id: String,
    verifier: Vec<u8>,
}

impl Principal {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The session check that travels with a call made now.
    fn check(&self) -> SessionCheck {
        SessionCheck {
            user_id: self.user_id.clone(),
            check: Authenticate {
                session_id: self.session_id.clone(),
                verifier: self.verifier.clone(),
                now: now_millis(),
            },
        }
    }
}

/// A registration that passed the gateway's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// Changes to a user that passed the gateway's rules; the passwords are still in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub email: Option<String>,
    pub name: Option<String>,
    pub password: Option<String>,
    /// The account's password as it is now: required with a change of email or password.
    pub current_password: Option<String>,
}

/// A session that a login started, and its token (shown once, stored nowhere).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: SessionRecord,
    pub token: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub node_id: String,
    pub shard_count: u32,
    /// The version of the metadata record members and replicas come from; 0 while none is known (then
    /// they come from the transport's peers and the replicas' own reports).
    pub meta_version: u64,
    pub members: Vec<MemberView>,
    /// Each shard from the replica that knows the highest term, with the record's replicas.
    pub shards: Vec<ShardStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub state: &'static str,
    /// The cluster transport address, or the HTTP address of a one-node cluster.
    pub addr: String,
}

pub struct ClusterSettings {
    /// This process's name in the cluster.
    pub node_id: String,
    /// How other members reach this process: its cluster address, or its HTTP address when alone.
    pub addr: String,
    pub call_timeout: Duration,
    pub session_ttl: Duration,
}

pub struct Cluster {
    settings: ClusterSettings,
    router: Arc<Router>,
    passwords: Passwords,
    tokens: Tokens,
}

impl Cluster {
    pub fn new(settings: ClusterSettings, router: Arc<Router>, passwords: Passwords, tokens: Tokens) -> Self {
        Self { settings, router, passwords, tokens }
    }

    fn shard_count(&self) -> u32 {
        self.router.control().shard_count()
    }

    fn user_shard(&self, user_id: &str) -> ShardId {
        shard_of(user_id, self.shard_count())
    }

    fn email_shard(&self, key: &str) -> ShardId {
        shard_of(&format!("email:{key}"), self.shard_count())
    }

    /// A claim younger than this may belong to a registration still in flight; only an older one is
    /// checked against its holder and possibly taken over.
    fn claim_grace_ms(&self) -> Millis {
        2 * self.settings.call_timeout.as_millis() as Millis
    }

    async fn call<O: LocalOp>(
        &self,
        shard: ShardId,
        key: &str,
        op: O,
        opts: CallOptions,
    ) -> Result<O::Answer, ApiError> {
        self.measured::<O>(self.router.execute(shard, key, op, opts.fault, self.settings.call_timeout)).await
    }

    /// A call on behalf of `who` to entity `key` of their shard (their orders live there too): their
    /// session is checked where it runs.
    async fn signed<O: LocalOp>(
        &self,
        who: &Principal,
        key: &str,
        op: O,
        opts: CallOptions,
    ) -> Result<O::Answer, ApiError> {
        let (shard, check, timeout) = (self.user_shard(&who.user_id), who.check(), self.settings.call_timeout);
        self.measured::<O>(self.router.execute_signed(shard, &check, key, op, opts.fault, timeout)).await
    }

    async fn measured<O: LocalOp>(
        &self,
        call: impl std::future::Future<Output = Result<O::Answer, ApiError>>,
    ) -> Result<O::Answer, ApiError> {
        let started = std::time::Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ApiError::Timeout) => "timeout",
            Err(ApiError::Unavailable(_)) => "unavailable",
            Err(_) => "rejected",
        };
        metrics::CALLS.with_label_values(&[O::ENTITY.as_str(), outcome]).observe(started.elapsed().as_secs_f64());
        result
    }

    /// An operation of the user `user_id`'s entity.
    async fn user<O: LocalOp>(&self, user_id: &str, op: O, opts: CallOptions) -> Result<O::Answer, ApiError> {
        self.call(self.user_shard(user_id), user_id, op, opts).await
    }

    /// An operation of the email claim under `key`.
    async fn email<O: LocalOp>(&self, key: &str, op: O) -> Result<O::Answer, ApiError> {
        self.call(self.email_shard(key), key, op, CallOptions::default()).await
    }

    /// Makes `user_id` the holder of the email, taking over a stale claim whose holder does not own the
    /// email any more (a registration that died half-way, a deleted user, a changed email).
    async fn claim_email(&self, key: &str, user_id: &str) -> Result<(), ApiError> {
        let now = now_millis();
        let holder = match self.email(key, ClaimEmail { user_id: user_id.to_owned(), now }).await? {
            ClaimOutcome::Claimed => return Ok(()),
            ClaimOutcome::HeldBy(claim) => claim,
        };
        if now - holder.claimed_at < self.claim_grace_ms() {
            return Err(ApiError::EmailTaken);
        }
        let owns = OwnsEmail { email_key: key.to_owned(), now };
        if self.user(&holder.user_id, owns, CallOptions::default()).await? {
            return Err(ApiError::EmailTaken);
        }
        let takeover = TakeoverEmail { from: holder.user_id.clone(), to: user_id.to_owned(), now };
        if self.email(key, takeover).await? {
            tracing::info!(stale_holder = %holder.user_id, "took over a stale email claim");
            Ok(())
        } else {
            Err(ApiError::EmailTaken)
        }
    }

    async fn release_email(&self, key: &str, user_id: &str) {
        // A claim left behind is healed by the next registration's takeover check.
        if let Err(e) = self.email(key, ReleaseEmail { user_id: user_id.to_owned() }).await {
            tracing::warn!(error = %e, "email claim not released; a later registration will take it over");
        }
    }

    pub async fn register(&self, new: NewUser) -> Result<UserRecord, ApiError> {
        let password_hash = self.passwords.hash(new.password).await?;
        let key = email_key(&new.email);
        let id = new_id();
        self.claim_email(&key, &id).await?;
        let now = now_millis();
        let user = UserRecord {
            id: id.clone(),
            email: new.email,
            name: new.name,
            password_hash,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        self.user(&id, CreateUser { user }, CallOptions::default()).await
    }

    pub async fn login(&self, email: &str, password: String) -> Result<NewSession, ApiError> {
        let key = email_key(email);
        let holder = self.email(&key, LookupEmail).await?;
        let hash = match &holder {
            Some(claim) => {
                let asked = Credentials { email_key: key.clone() };
                match self.user(&claim.user_id, asked, CallOptions::default()).await {
                    Ok(hash) => Some(hash),
                    Err(ApiError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        if !self.passwords.verify(password, hash.clone()).await {
            return Err(ApiError::InvalidCredentials);
        }
        let (Some(claim), Some(hash)) = (holder, hash) else { return Err(ApiError::InvalidCredentials) };
        let session_id = new_id();
        let (token, verifier) = self.tokens.issue(&claim.user_id, &session_id);
        let now = now_millis();
        let session = SessionRecord {
            session_id,
            user_id: claim.user_id.clone(),
            verifier,
            created_at: now,
            expires_at: now + self.settings.session_ttl.as_millis() as Millis,
            last_seen_at: now,
        };
        let op = CreateSession { session, password_hash: hash };
        let session = self.user(&claim.user_id, op, CallOptions::default()).await?;
        Ok(NewSession { session, token })
    }

    /// The caller a bearer token names; `unauthorized` for a token this cluster did not sign. Whether its
    /// session is live is checked with each call made for it.
    pub fn principal(&self, token: &str) -> Result<Principal, ApiError> {
        let claims = self.tokens.parse(token).ok_or(ApiError::Unauthorized)?;
        Ok(Principal { user_id: claims.user_id, session_id: claims.session_id, verifier: claims.verifier })
    }

    /// The caller's live session; `unauthorized` for anything else.
    pub async fn current_session(&self, who: &Principal, opts: CallOptions) -> Result<SessionRecord, ApiError> {
        let check = who.check();
        self.user(&who.user_id, check.check, opts).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::Unauthorized,
            other => other,
        })
    }

    /// The caller behind a bearer token with its live session; `unauthorized` for anything else.
    pub async fn authenticate(&self, token: &str, opts: CallOptions) -> Result<(Principal, SessionRecord), ApiError> {
        let who = self.principal(token)?;
        let session = self.current_session(&who, opts).await?;
        Ok((who, session))
    }

    /// `forbidden` unless `user_id` is the caller's own; a caller whose session is not live learns
    /// `unauthorized` first, as for any other call.
    async fn must_be_self(&self, who: &Principal, user_id: &str) -> Result<(), ApiError> {
        if who.user_id == user_id {
            return Ok(());
        }
        self.current_session(who, CallOptions::default()).await?;
        Err(ApiError::Forbidden)
    }

    pub async fn get_user(&self, who: &Principal, user_id: &str, opts: CallOptions) -> Result<UserRecord, ApiError> {
        self.must_be_self(who, user_id).await?;
        self.signed(who, user_id, GetUser, opts).await
    }

    /// Applies `changes` to the caller's own account. A change of email or password takes the current
    /// password (a stolen session alone cannot take the account over); `password_rules` judges a new
    /// password against the account as stored (the gateway's strength rule, which knows its email and
    /// name). A new password ends every other session of the user in the same write.
    pub async fn update_user(
        &self,
        who: &Principal,
        user_id: &str,
        changes: UserChanges,
        if_match: Option<Vec<u64>>,
        opts: CallOptions,
        password_rules: impl FnOnce(&UserRecord, &str) -> Result<(), ApiError>,
    ) -> Result<UserRecord, ApiError> {
        self.must_be_self(who, user_id).await?;
        let current = self.signed(who, user_id, GetUser, opts).await?;
        if if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
            return Err(ApiError::PreconditionFailed { current: current.version });
        }
        let needs_proof = changes.email.is_some() || changes.password.is_some();
        let proven_hash = match changes.current_password {
            Some(given) => {
                if !self.passwords.verify(given, Some(current.password_hash.clone())).await {
                    return Err(ApiError::CurrentPasswordRequired);
                }
                Some(current.password_hash.clone())
            }
            None if needs_proof => return Err(ApiError::CurrentPasswordRequired),
            None => None,
        };
        if let Some(p) = &changes.password {
            password_rules(&current, p)?;
        }
        let password_hash = match changes.password {
            Some(p) => Some(self.passwords.hash(p).await?),
            None => None,
        };
        let new_key = changes.email.as_deref().map(email_key).filter(|k| *k != email_key(&current.email));
        if let Some(k) = &new_key {
            self.claim_email(k, user_id).await?;
        }
        let set = UserChangeSet { email: changes.email, name: changes.name, password_hash };
        let op = UpdateAccount {
            changes: set,
            if_match,
            now: now_millis(),
            keep_session: who.session_id.clone(),
            proven_hash,
        };
        match self.signed(who, user_id, op, opts).await {
            Ok(updated) => {
                if let Some(old) = updated.released_email {
                    self.release_email(&email_key(&old), user_id).await;
                }
                Ok(updated.user)
            }
            Err(e) => {
                if let (Some(k), false) = (&new_key, matches!(e, ApiError::Timeout)) {
                    self.release_email(k, user_id).await;
                }
                Err(e)
            }
        }
    }

    pub async fn delete_user(&self, who: &Principal, user_id: &str, opts: CallOptions) -> Result<(), ApiError> {
        self.must_be_self(who, user_id).await?;
        let email = self.signed(who, user_id, DeleteUser, opts).await?;
        self.release_email(&email_key(&email), user_id).await;
        Ok(())
    }

    pub async fn logout(&self, who: &Principal) -> Result<(), ApiError> {
        self.delete_session(who, &who.session_id.clone()).await
    }

    pub async fn list_sessions(&self, who: &Principal, user_id: &str) -> Result<Vec<SessionRecord>, ApiError> {
        self.must_be_self(who, user_id).await?;
        self.signed(who, user_id, ListSessions { now: now_millis() }, CallOptions::default()).await
    }

    pub async fn delete_session(&self, who: &Principal, session_id: &str) -> Result<(), ApiError> {
        let op = DeleteSession { session_id: session_id.to_owned() };
        self.signed(who, &who.user_id, op, CallOptions::default()).await
    }

    /// Creates an order of the caller's; `idempotency_key` has passed the gateway's rules.
    pub async fn create_order(
        &self,
        who: &Principal,
        order: NewOrder,
        idempotency_key: Option<String>,
        opts: CallOptions,
    ) -> Result<OrderCreated, ApiError> {
        let op = CreateOrder { order, idempotency_key, now: now_millis() };
        self.signed(who, &who.user_id, op, opts).await
    }

    pub async fn get_order(&self, who: &Principal, order_id: &str, opts: CallOptions) -> Result<OrderRecord, ApiError> {
        self.signed(who, order_id, GetOrder { user_id: who.user_id.clone() }, opts).await
    }

    pub async fn list_orders(
        &self,
        who: &Principal,
        user_id: &str,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<OrderList, ApiError> {
        self.must_be_self(who, user_id).await?;
        self.signed(who, user_id, ListOrders { limit, cursor }, CallOptions::default()).await
    }

    pub async fn order_action(
        &self,
        who: &Principal,
        order_id: &str,
        action: OrderAction,
        if_match: Option<Vec<u64>>,
        opts: CallOptions,
    ) -> Result<OrderRecord, ApiError> {
        let op = TransitionOrder { user_id: who.user_id.clone(), action, if_match, now: now_millis() };
        self.signed(who, order_id, op, opts).await
    }

    /// Whether this process can serve: a node when every shard it holds knows its leader and the
    /// cluster's metadata record counts it as a member; a gateway when it knows the record and every shard has a leader somewhere.
    pub async fn ready(&self) -> bool {
        let control = self.router.control();
        match (&control.local, self.router.table()) {
            (Some(local), Some(table)) => {
                table.running() == self.shard_count() as usize
                    && local.log.ready()
                    && self.knows_meta().await
                    && self.is_member()
            }
            _ => {
                let view = self.view().await;
                view.meta_version >= 1
                    && view.shards.len() == self.shard_count() as usize
                    && view.shards.iter().all(|s| s.leader.is_some())
            }
        }
    }

    /// Whether a metadata record is known, looking once now if the keeper has not found one yet: a process
    /// is not ready before it knows the members and placement it routes by.
    async fn knows_meta(&self) -> bool {
        let control = self.router.control();
        if control.cache.meta().is_none() {
            let timeout = self.settings.call_timeout.min(Duration::from_secs(2));
            let _ = tokio::time::timeout(timeout, refresh(control, None)).await;
        }
        control.cache.meta().is_some()
    }

    /// Whether the record says this node is being drained.
    pub fn draining(&self) -> bool {
        let control = self.router.control();
        control.local.is_some() && control.cache.meta().is_some_and(|m| m.draining.contains(&self.settings.node_id))
    }

    /// Starts draining member `id`: the metadata group's leader marks it, and the placement driver moves
    /// its replicas and leaderships to the other members. Asked of the members in turn, following the
    /// leader they name.
    pub async fn drain(&self, id: &str) -> Result<(), ApiError> {
        let control = self.router.control();
        let Some(remote) = &control.remote else {
            return Err(ApiError::CannotDrain("a one-node cluster has no other member to hand its shards to".into()));
        };
        self.knows_meta().await;
        let record = control.cache.meta().ok_or_else(|| ApiError::Unavailable("no cluster metadata yet".into()))?;
        if !record.members.iter().any(|m| m.id == id) {
            return Err(ApiError::NotFound(format!("member {id}")));
        }
        let timeout = self.settings.call_timeout.min(Duration::from_secs(5));
        let op = ReplicaOp::Drain { id: id.to_owned() };
        if let Some(record) = client::ask_metadata_leader(remote.as_ref(), &record, op, timeout).await? {
            control.cache.offer(record);
        }
        Ok(())
    }

    /// Whether the record counts this node as a member: a node that joins is ready once admitted, and a
    /// drained one leaves.
    pub fn is_member(&self) -> bool {
        self.router.control().cache.meta().is_some_and(|m| m.members.iter().any(|m| m.id == self.settings.node_id))
    }

    /// Members and their state, and every shard's replicas, leader, term and commit index: members and
    /// replicas from the metadata record, states from the failure detector, leaders, terms and commit
    /// indexes as the reachable nodes report them (each shard from the replica that knows the highest
    /// term).
    pub async fn view(&self) -> ClusterView {
        let timeout = self.settings.call_timeout.min(Duration::from_secs(2));
        // The keeper may not have found it yet (a process that just started).
        self.knows_meta().await;
        let control = self.router.control();
        let meta = control.cache.meta();
        let statuses = client::cluster_status(control, timeout).await;
        let mut shards: Vec<Option<ShardStatus>> = vec![None; self.shard_count() as usize];
        for status in &statuses {
            for s in &status.shards {
                let Some(slot) = shards.get_mut(s.shard as usize) else { continue };
                let newer = slot.as_ref().is_none_or(|v| (s.term, s.commit_index) > (v.term, v.commit_index));
                if newer {
                    let placed = meta.as_ref().and_then(|m| m.placement.get(s.shard as usize));
                    *slot = Some(ShardStatus {
                        shard: s.shard,
                        replicas: placed.unwrap_or(&s.replicas).clone(),
                        leader: s.leader.clone(),
                        term: s.term,
                        commit_index: s.commit_index,
                    });
                }
            }
        }
        let peers = control.remote.as_ref().map(|r| r.peers()).unwrap_or_default();
        let is_me = |id: &str| control.local.is_some() && id == self.settings.node_id;
        let members = match &meta {
            Some(meta) => meta
                .members
                .iter()
                .map(|m| {
                    let state = if meta.draining.contains(&m.id) {
                        "draining"
                    } else if is_me(&m.id) {
                        "up"
                    } else {
                        // A member the failure detector has never heard of is not reachable from here.
                        peers.iter().find(|p| p.id == m.id).map_or("down", |p| p.state.as_str())
                    };
                    // Alone, a node has no transport: its HTTP address is how it is reached (docs/api.md).
                    let addr = if is_me(&m.id) && control.remote.is_none() {
                        self.settings.addr.clone()
                    } else {
                        m.addr.clone()
                    };
                    MemberView { id: m.id.clone(), state, addr }
                })
                .collect(),
            None => {
                let mut members = vec![];
                if control.local.is_some() {
                    members.push(MemberView {
                        id: self.settings.node_id.clone(),
                        state: "up",
                        addr: self.settings.addr.clone(),
                    });
                }
                members.extend(peers.into_iter().map(|p| MemberView {
                    id: p.id,
                    state: p.state.as_str(),
                    addr: p.addr,
                }));
                members
            }
        };
        ClusterView {
            node_id: self.settings.node_id.clone(),
            shard_count: self.shard_count(),
            meta_version: meta.as_ref().map_or(0, |m| m.version),
            members,
            shards: shards.into_iter().flatten().collect(),
        }
    }
}
