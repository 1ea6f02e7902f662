//! The cluster as its clients see it: every operation of the API, routed to the shard that owns it,
//! on whichever node leads that shard (`routing`). The gateway calls only this. Each call carries a
//! timeout; an answer that never comes is `timeout` (outcome unknown) for a write, and is retried for a
//! read.

mod routing;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use routing::{answer, LocalShards, Peer, RaftHandler, Remote, RemoteError, ReplicasHandler, Router};

use crate::entity::{ClaimOutcome, EmailOp, OrderOp, Reply, UserChangeSet, UserOp};
use crate::error::ApiError;
use crate::ids::{new_id, now_millis, shard_of, Millis, ShardId};
use crate::metrics;
use crate::model::{
    EmailClaim, NewSession, OrderAction, OrderPage, OrderView, SessionRecord, SessionView, UserRecord, UserView,
};
use crate::protocol::ShardCall;
use crate::security::{Passwords, Tokens};
use crate::validate::{email_key, CreateOrderRequest, CreateUserRequest, LoginRequest, UpdateUserRequest};

/// Per-request options that are not part of the API.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Test-only: make the entity that handles this request panic. Ignored unless the node enables
    /// `faults.panic_injection`.
    pub inject_panic: bool,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub session: SessionRecord,
}

/// The outcome of an order create: the order, and whether this call created it.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    pub order: OrderView,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub node_id: String,
    pub shard_count: u32,
    /// The version of the metadata record members and replicas come from; 0 while none is known (then
    /// they come from the transport's peers and the replicas' own reports).
    pub meta_version: u64,
    pub members: Vec<MemberView>,
    pub shards: Vec<ShardView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub state: &'static str,
    /// The cluster transport address, or the HTTP address of a one-node cluster.
    pub addr: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardView {
    pub shard: u32,
    pub replicas: Vec<String>,
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
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

/// The answer a call was expected to give, or an error naming what came instead. Names only the
/// variant: a reply may hold a password hash.
macro_rules! expect {
    ($reply:expr, $pattern:pat => $value:expr) => {
        match $reply {
            $pattern => Ok($value),
            other => Err(ApiError::Unavailable(format!(
                "unexpected answer from a shard: {}",
                format!("{other:?}").split(['(', ' ', '{']).next().unwrap_or_default()
            ))),
        }
    };
}

impl Cluster {
    pub fn new(settings: ClusterSettings, router: Arc<Router>, passwords: Passwords, tokens: Tokens) -> Self {
        Self { settings, router, passwords, tokens }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn shard_count(&self) -> u32 {
        self.router.shard_count
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

    async fn call(&self, shard: ShardId, call: ShardCall, opts: CallOptions) -> Result<Reply, ApiError> {
        let started = std::time::Instant::now();
        let kind = call.kind();
        let result = self.router.execute(shard, call, opts.inject_panic, self.settings.call_timeout).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ApiError::Timeout) => "timeout",
            Err(ApiError::Unavailable(_) | ApiError::NotLeader { .. }) => "unavailable",
            Err(_) => "rejected",
        };
        metrics::CALLS.with_label_values(&[kind, outcome]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn user(&self, user_id: &str, opts: CallOptions, op: UserOp) -> Result<Reply, ApiError> {
        self.call(self.user_shard(user_id), ShardCall::User { key: user_id.to_owned(), op }, opts).await
    }

    async fn email(&self, key: &str, op: EmailOp) -> Result<Reply, ApiError> {
        self.call(self.email_shard(key), ShardCall::Email { key: key.to_owned(), op }, CallOptions::default()).await
    }

    async fn order(&self, owner: &str, order_id: &str, opts: CallOptions, op: OrderOp) -> Result<Reply, ApiError> {
        self.call(self.user_shard(owner), ShardCall::Order { key: order_id.to_owned(), op }, opts).await
    }

    /// Makes `user_id` the holder of the email, taking over a stale claim whose holder does not own the
    /// email any more (a registration that died half-way, a deleted user, a changed email).
    async fn claim_email(&self, key: &str, user_id: &str) -> Result<(), ApiError> {
        let now = now_millis();
        let outcome = self.email(key, EmailOp::Claim { user_id: user_id.to_owned(), now }).await?;
        let holder = match expect!(outcome, Reply::Claim(c) => c)? {
            ClaimOutcome::Claimed => return Ok(()),
            ClaimOutcome::HeldBy(claim) => claim,
        };
        if now - holder.claimed_at < self.claim_grace_ms() {
            return Err(ApiError::EmailTaken);
        }
        let owns = self
            .user(&holder.user_id, CallOptions::default(), UserOp::OwnsEmail { email_key: key.to_owned(), now })
            .await?;
        let owns = expect!(owns, Reply::Bool(b) => b)?;
        if owns {
            return Err(ApiError::EmailTaken);
        }
        let taken =
            self.email(key, EmailOp::Takeover { from: holder.user_id.clone(), to: user_id.to_owned(), now }).await?;
        let taken = expect!(taken, Reply::Bool(b) => b)?;
        if taken {
            tracing::info!(stale_holder = %holder.user_id, "took over a stale email claim");
            Ok(())
        } else {
            Err(ApiError::EmailTaken)
        }
    }

    async fn release_email(&self, key: &str, user_id: &str) {
        // A claim left behind is healed by the next registration's takeover check.
        if let Err(e) = self.email(key, EmailOp::Release { user_id: user_id.to_owned() }).await {
            tracing::warn!(error = %e, "email claim not released; a later registration will take it over");
        }
    }

    pub async fn register(&self, req: CreateUserRequest) -> Result<UserView, ApiError> {
        let new = req.validate()?;
        let password_hash = self.passwords.hash(new.password).await?;
        let key = email_key(&new.email);
        let id = new_id();
        self.claim_email(&key, &id).await?;
        let now = now_millis();
        let record = UserRecord {
            id: id.clone(),
            email: new.email,
            name: new.name,
            password_hash,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let user = self.user(&id, CallOptions::default(), UserOp::Create { user: record }).await?;
        Ok(UserView::from(&expect!(user, Reply::User(u) => u)?))
    }

    pub async fn login(&self, req: LoginRequest) -> Result<NewSession, ApiError> {
        let (email, password) = req.validate()?;
        let key = email_key(&email);
        let holder: Option<EmailClaim> = expect!(self.email(&key, EmailOp::Lookup).await?, Reply::MaybeClaim(c) => c)?;
        let hash = match &holder {
            Some(claim) => {
                match self
                    .user(&claim.user_id, CallOptions::default(), UserOp::Credentials { email_key: key.clone() })
                    .await
                {
                    Ok(h) => Some(expect!(h, Reply::Text(h) => h)?),
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
        let record = SessionRecord {
            session_id,
            user_id: claim.user_id.clone(),
            verifier,
            created_at: now,
            expires_at: now + self.settings.session_ttl.as_millis() as Millis,
            last_seen_at: now,
        };
        let session = self
            .user(
                &claim.user_id,
                CallOptions::default(),
                UserOp::CreateSession { session: record, password_hash: hash },
            )
            .await?;
        let session = expect!(session, Reply::Session(s) => s)?;
        Ok(NewSession { session: SessionView::from(&session), token })
    }

    /// The caller behind a bearer token; `unauthorized` for anything but a live session.
    pub async fn authenticate(&self, token: &str, opts: CallOptions) -> Result<Principal, ApiError> {
        let claims = self.tokens.parse(token).ok_or(ApiError::Unauthorized)?;
        let now = now_millis();
        let op = UserOp::Authenticate { session_id: claims.session_id.clone(), verifier: claims.verifier.clone(), now };
        let session = self.user(&claims.user_id, opts, op).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::Unauthorized,
            other => other,
        })?;
        let session = expect!(session, Reply::Session(s) => s)?;
        Ok(Principal { user_id: claims.user_id, session })
    }

    fn must_be_self(who: &Principal, user_id: &str) -> Result<(), ApiError> {
        if who.user_id == user_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub async fn get_user(&self, who: &Principal, user_id: &str, opts: CallOptions) -> Result<UserView, ApiError> {
        Self::must_be_self(who, user_id)?;
        let user = self.user(user_id, opts, UserOp::Get).await?;
        Ok(UserView::from(&expect!(user, Reply::User(u) => u)?))
    }

    pub async fn update_user(
        &self,
        who: &Principal,
        user_id: &str,
        req: UpdateUserRequest,
        if_match: Option<Vec<u64>>,
        opts: CallOptions,
    ) -> Result<UserView, ApiError> {
        Self::must_be_self(who, user_id)?;
        let changes = req.validate()?;
        let current = expect!(self.user(user_id, opts, UserOp::Get).await?, Reply::User(u) => u)?;
        if if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
            return Err(ApiError::PreconditionFailed { current: current.version });
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
        let now = now_millis();
        let updated = self.user(user_id, opts, UserOp::Update { changes: set, if_match, now }).await;
        match updated.and_then(|r| expect!(r, Reply::UserUpdated(u, old) => (u, old))) {
            Ok((user, released)) => {
                if let Some(old) = released {
                    self.release_email(&email_key(&old), user_id).await;
                }
                Ok(UserView::from(&user))
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
        Self::must_be_self(who, user_id)?;
        let email = expect!(self.user(user_id, opts, UserOp::Delete).await?, Reply::Text(e) => e)?;
        self.release_email(&email_key(&email), user_id).await;
        Ok(())
    }

    pub fn current_session(&self, who: &Principal) -> SessionView {
        SessionView::from(&who.session)
    }

    pub async fn logout(&self, who: &Principal) -> Result<(), ApiError> {
        self.delete_session(who, &who.session.session_id.clone()).await
    }

    pub async fn list_sessions(&self, who: &Principal, user_id: &str) -> Result<Vec<SessionView>, ApiError> {
        Self::must_be_self(who, user_id)?;
        let now = now_millis();
        let list = self.user(user_id, CallOptions::default(), UserOp::ListSessions { now }).await?;
        let list = expect!(list, Reply::Sessions(l) => l)?;
        Ok(list.iter().map(SessionView::from).collect())
    }

    pub async fn delete_session(&self, who: &Principal, session_id: &str) -> Result<(), ApiError> {
        let done = self.user(
            &who.user_id,
            CallOptions::default(),
            UserOp::DeleteSession { session_id: session_id.to_owned() },
        );
        expect!(done.await?, Reply::Done => ())
    }

    pub async fn create_order(
        &self,
        who: &Principal,
        req: CreateOrderRequest,
        idempotency_key: Option<String>,
        opts: CallOptions,
    ) -> Result<CreatedOrder, ApiError> {
        if let Some(k) = &idempotency_key {
            crate::validate::validate_idempotency_key(k)?;
        }
        let order = req.validate()?;
        let now = now_millis();
        let out = self.user(&who.user_id, opts, UserOp::CreateOrder { order, idempotency_key, now }).await?;
        let out = expect!(out, Reply::OrderCreated(o) => o)?;
        Ok(CreatedOrder { order: OrderView::from(&out.order), created: out.created })
    }

    pub async fn get_order(&self, who: &Principal, order_id: &str, opts: CallOptions) -> Result<OrderView, ApiError> {
        let order = self.order(&who.user_id, order_id, opts, OrderOp::Get { user_id: who.user_id.clone() }).await?;
        Ok(OrderView::from(&expect!(order, Reply::Order(o) => o)?))
    }

    pub async fn list_orders(
        &self,
        who: &Principal,
        user_id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<OrderPage, ApiError> {
        Self::must_be_self(who, user_id)?;
        let page =
            self.user(user_id, CallOptions::default(), UserOp::ListOrders { limit: limit as u32, cursor }).await?;
        let (orders, next) = expect!(page, Reply::Orders(o, n) => (o, n))?;
        Ok(OrderPage { items: orders.iter().map(OrderView::from).collect(), next_cursor: next })
    }

    pub async fn order_action(
        &self,
        who: &Principal,
        order_id: &str,
        action: OrderAction,
        if_match: Option<Vec<u64>>,
        opts: CallOptions,
    ) -> Result<OrderView, ApiError> {
        let now = now_millis();
        let op = OrderOp::Transition { user_id: who.user_id.clone(), action, if_match, now };
        let order = self.order(&who.user_id, order_id, opts, op).await?;
        Ok(OrderView::from(&expect!(order, Reply::Order(o) => o)?))
    }

    /// Whether this process can serve: a node when every shard it holds knows its leader and the
    /// cluster's metadata record counts it as a member; a gateway when it knows the record and every shard has a leader somewhere.
    pub async fn ready(&self) -> bool {
        match &self.router.local {
            Some(local) => {
                local.table.running() == self.shard_count() as usize
                    && local.log.ready()
                    && self.knows_meta().await
                    && self.is_member()
            }
            None => {
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
        if self.router.meta().is_none() {
            let timeout = self.settings.call_timeout.min(Duration::from_secs(2));
            let _ = tokio::time::timeout(timeout, crate::meta::refresh(&self.router, None)).await;
        }
        self.router.meta().is_some()
    }

    /// Whether the record says this node is being drained.
    pub fn draining(&self) -> bool {
        self.router.local.is_some() && self.router.meta().is_some_and(|m| m.draining.contains(&self.settings.node_id))
    }

    /// Starts draining member `id`: the metadata group's leader marks it, and the placement driver moves
    /// its replicas and leaderships to the other members. Asked of the members in turn, following the
    /// leader they name.
    pub async fn drain(&self, id: &str) -> Result<(), ApiError> {
        use crate::placement_driver::{ReplicaAnswer, ReplicaOp};
        let Some(remote) = &self.router.remote else {
            return Err(ApiError::CannotDrain("a one-node cluster has no other member to hand its shards to".into()));
        };
        self.knows_meta().await;
        let record = self.router.meta().ok_or_else(|| ApiError::Unavailable("no cluster metadata yet".into()))?;
        if !record.members.iter().any(|m| m.id == id) {
            return Err(ApiError::NotFound(format!("member {id}")));
        }
        let timeout = self.settings.call_timeout.min(Duration::from_secs(5));
        let op = ReplicaOp::Drain { id: id.to_owned() };
        let ask = |node: String, op: ReplicaOp| async move {
            let payload = crate::codec::encode(&crate::protocol::Request::Replicas(op));
            let bytes =
                remote.call(&node, payload, timeout).await.map_err(|e| ApiError::Unavailable(format!("{e:?}")))?;
            crate::codec::decode::<ReplicaAnswer>(b"replicas", &bytes)
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
        };
        let record = crate::placement_driver::to_metadata_leader(&record, op, ask).await?;
        if let Some(record) = record {
            self.router.offer_meta(record);
        }
        Ok(())
    }

    /// Whether the record counts this node as a member: a node that joins is ready once admitted, and a
    /// drained one leaves.
    pub fn is_member(&self) -> bool {
        self.router.meta().is_some_and(|m| m.members.iter().any(|m| m.id == self.settings.node_id))
    }

    /// Members and their state, and every shard's replicas, leader, term and commit index: members and
    /// replicas from the metadata record, states from the failure detector, leaders, terms and commit
    /// indexes as the reachable nodes report them (each shard from the replica that knows the highest
    /// term).
    pub async fn view(&self) -> ClusterView {
        let timeout = self.settings.call_timeout.min(Duration::from_secs(2));
        // The keeper may not have found it yet (a process that just started).
        self.knows_meta().await;
        let meta = self.router.meta();
        let statuses = self.router.cluster_status(timeout).await;
        let mut shards: Vec<Option<ShardView>> = vec![None; self.shard_count() as usize];
        for status in &statuses {
            for s in &status.shards {
                let Some(slot) = shards.get_mut(s.shard as usize) else { continue };
                let newer = slot.as_ref().is_none_or(|v| (s.term, s.commit_index) > (v.term, v.commit_index));
                if newer {
                    let placed = meta.as_ref().and_then(|m| m.placement.get(s.shard as usize));
                    *slot = Some(ShardView {
                        shard: s.shard,
                        replicas: placed.unwrap_or(&s.replicas).clone(),
                        leader: s.leader.clone(),
                        term: s.term,
                        commit_index: s.commit_index,
                    });
                }
            }
        }
        let peers = self.router.remote.as_ref().map(|r| r.peers()).unwrap_or_default();
        let is_me = |id: &str| self.router.local.is_some() && id == self.settings.node_id;
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
                        peers.iter().find(|p| p.id == m.id).map_or("down", |p| p.state)
                    };
                    // Alone, a node has no transport: its HTTP address is how it is reached (API.md).
                    let addr = if is_me(&m.id) && self.router.remote.is_none() {
                        self.settings.addr.clone()
                    } else {
                        m.addr.clone()
                    };
                    MemberView { id: m.id.clone(), state, addr }
                })
                .collect(),
            None => {
                let mut members = vec![];
                if self.router.local.is_some() {
                    members.push(MemberView {
                        id: self.settings.node_id.clone(),
                        state: "up",
                        addr: self.settings.addr.clone(),
                    });
                }
                members.extend(peers.into_iter().map(|p| MemberView { id: p.id, state: p.state, addr: p.addr }));
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
