//! What one operation of each mix sends, the status each of its requests must get, and the fixtures
//! (users with live sessions, and their orders) created before measuring and never counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use futures::{StreamExt, TryStreamExt};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

/// Registering hashes a password with argon2id, which takes most of a core: more at once only queues.
const FIXTURE_CONCURRENCY: usize = 4;
const PASSWORD: &str = "quartz meadow lantern 9";

/// One kind of operation: the baseline's, or one mix's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Hello,
    RegisterLogin,
    CreateOrder,
    /// `create-order` for one user only: every write goes to that user's shard.
    CreateOrderHot,
    GetOrder,
    /// `get-order` over one user's orders: every read goes to that user's shard.
    GetOrderHot,
    SessionCheck,
    /// The scale-out benchmark's mix: 70 % get-order, 20 % create-order, 10 % session-check.
    Mixed,
}

impl Kind {
    /// The mixes, in the order `--mix all` runs them.
    pub const MIXES: [Kind; 6] = [
        Kind::RegisterLogin,
        Kind::CreateOrder,
        Kind::CreateOrderHot,
        Kind::GetOrder,
        Kind::GetOrderHot,
        Kind::SessionCheck,
    ];

    /// The mix whose `name` this is.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::MIXES.into_iter().chain([Self::Hello, Self::Mixed]).find(|k| k.name() == name)
    }

    /// `read` for the mixes that only read, `write` for those that make durable changes.
    pub fn class(self) -> &'static str {
        match self {
            Self::Hello | Self::GetOrder | Self::GetOrderHot | Self::SessionCheck => "read",
            Self::RegisterLogin | Self::CreateOrder | Self::CreateOrderHot => "write",
            Self::Mixed => "mixed",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::RegisterLogin => "register-login",
            Self::CreateOrder => "create-order",
            Self::CreateOrderHot => "create-order-hot",
            Self::GetOrder => "get-order",
            Self::GetOrderHot => "get-order-hot",
            Self::SessionCheck => "session-check",
            Self::Mixed => "mixed",
        }
    }

    /// The spread load a hot load stands beside (`get-order-hot` → `get-order`); itself otherwise.
    pub fn spread(self) -> Self {
        match self {
            Self::CreateOrderHot => Self::CreateOrder,
            Self::GetOrderHot => Self::GetOrder,
            other => other,
        }
    }

    /// Whether every operation of the load goes to one user's shard.
    pub fn is_hot(self) -> bool {
        self.spread() != self
    }
}

/// What one operation of the mixed load is, from its sequence number: a hash of it, so that the choice
/// is not tied to the fixture or the gateway that the same number picks round robin.
pub fn mixed_step(seq: u64) -> Kind {
    match splitmix64(seq) % 100 {
        0..=69 => Kind::GetOrder,
        70..=89 => Kind::CreateOrder,
        _ => Kind::SessionCheck,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Why an operation did not count as a success; its text keys the error counts in the report.
#[derive(Debug)]
pub enum OpError {
    Status { step: &'static str, status: StatusCode },
    Timeout { step: &'static str },
    Transport { step: &'static str },
    NoFixtures,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { step, status } => write!(f, "{step}: status {}", status.as_u16()),
            Self::Timeout { step } => write!(f, "{step}: timeout"),
            Self::Transport { step } => write!(f, "{step}: connection error"),
            Self::NoFixtures => write!(f, "no fixtures for this mix"),
        }
    }
}

/// Pre-created state the mixes read: bearer tokens of pool users, and orders (their path) with their
/// owner's token; for the hot loads, one more user and that user's orders.
#[derive(Clone, Debug, Default)]
pub struct Fixtures {
    tokens: Arc<[String]>,
    orders: Arc<[(String, String)]>,
    hot_token: Arc<[String]>,
    hot_orders: Arc<[(String, String)]>,
}

impl Fixtures {
    /// Creates what `kinds` need: `users` users with a session each, and `orders_per_user` orders each
    /// when a mix reads orders; for the hot loads one more user, with `users × orders_per_user` orders
    /// when a hot load reads them.
    pub async fn create(
        client: &Client,
        base: &str,
        kinds: &[Kind],
        users: usize,
        orders_per_user: usize,
    ) -> Result<Self> {
        let spread = |k: &&Kind| !k.is_hot() && !matches!(k, Kind::Hello | Kind::RegisterLogin);
        let need_users = kinds.iter().any(|k| spread(&k));
        let need_hot = kinds.iter().any(|k| k.is_hot());
        let prefix = run_prefix();
        let mut fixtures = Self::default();
        if need_users {
            eprintln!("bench: fixtures: registering {users} users…");
            let tokens = register_users(client, base, &format!("{prefix}-pool"), users).await?;
            if kinds.iter().any(|k| matches!(k, Kind::GetOrder | Kind::Mixed)) {
                eprintln!("bench: fixtures: creating {} orders…", users * orders_per_user);
                // Round after round over the users, so that walking the pool in order walks the users
                // round robin: order i is user i mod `users`'s.
                let owners = (0..orders_per_user).flat_map(|_| tokens.iter());
                fixtures.orders = create_orders(client, base, owners).await?.into();
            }
            fixtures.tokens = tokens.into();
        }
        if need_hot {
            eprintln!("bench: fixtures: registering the hot user…");
            let hot = register_users(client, base, &format!("{prefix}-hot"), 1).await?;
            if kinds.contains(&Kind::GetOrderHot) {
                eprintln!("bench: fixtures: creating {} orders of the hot user…", users * orders_per_user);
                let owners = std::iter::repeat_n(&hot[0], users * orders_per_user);
                fixtures.hot_orders = create_orders(client, base, owners).await?.into();
            }
            fixtures.hot_token = hot.into();
        }
        Ok(fixtures)
    }
}

/// Registers `count` users and logs each in; their tokens, in order.
async fn register_users(client: &Client, base: &str, prefix: &str, count: usize) -> Result<Vec<String>> {
    futures::stream::iter(0..count)
        .map(|i| {
            let email = format!("{prefix}-{i}@bench.example");
            async move {
                let token = register_and_login(client, base, &email).await.map_err(|e| anyhow!("{e}"))?;
                token.with_context(|| format!("fixture user {email}: the login answer has no token"))
            }
        })
        .buffered(FIXTURE_CONCURRENCY)
        .try_collect()
        .await
        .context("create the fixture users")
}

/// Creates one order per token of `owners`; (token, path of the order), in the order of `owners`.
async fn create_orders<'a>(
    client: &Client,
    base: &str,
    owners: impl Iterator<Item = &'a String>,
) -> Result<Vec<(String, String)>> {
    futures::stream::iter(owners)
        .map(|token| async move {
            let body = create_order(client, base, token, None).await.map_err(|e| anyhow!("{e}"))?;
            let id = json_str(&body, "id").context("the order answer has no id")?;
            Ok::<_, anyhow::Error>((token.clone(), format!("/v1/orders/{id}")))
        })
        .buffered(FIXTURE_CONCURRENCY)
        .try_collect()
        .await
        .context("create the fixture orders")
}

/// One mix (or the baseline) bound to its target, its client and its fixtures.
pub struct Workload {
    kind: Kind,
    client: Client,
    /// Base URLs of the target, taken round robin by sequence number (a cluster's gateways).
    bases: Vec<String>,
    fixtures: Fixtures,
    /// Unique per registration across every phase of this run, and across runs by the prefix.
    prefix: String,
    registrations: AtomicU64,
}

impl Workload {
    pub fn new(kind: Kind, client: Client, base: &str, fixtures: Fixtures) -> Self {
        Self::spread_over(kind, client, &[base.to_owned()], fixtures)
    }

    /// The load against several entry points of one target: operation `seq` goes to `bases[seq % n]`.
    pub fn spread_over(kind: Kind, client: Client, bases: &[String], fixtures: Fixtures) -> Self {
        let bases = bases.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        Self { kind, client, bases, fixtures, prefix: run_prefix(), registrations: AtomicU64::new(0) }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// One operation; `seq` picks its fixtures and its entry point, round robin.
    pub async fn run_once(&self, seq: u64) -> Result<(), OpError> {
        let kind = match self.kind {
            Kind::Mixed => mixed_step(seq),
            kind => kind,
        };
        self.run_kind(kind, seq).await
    }

    async fn run_kind(&self, kind: Kind, seq: u64) -> Result<(), OpError> {
        let client = &self.client;
        let base = pick(&self.bases, seq)?.as_str();
        match kind {
            Kind::Hello => exchange("hello", client.get(format!("{base}/hello")), StatusCode::OK).await.map(drop),
            Kind::RegisterLogin => {
                let n = self.registrations.fetch_add(1, Ordering::Relaxed);
                let email = format!("{}-{n}@bench.example", self.prefix);
                register_and_login(client, base, &email).await.map(drop)
            }
            Kind::CreateOrder => create_order(client, base, pick(&self.fixtures.tokens, seq)?, None).await.map(drop),
            Kind::CreateOrderHot => {
                create_order(client, base, pick(&self.fixtures.hot_token, seq)?, None).await.map(drop)
            }
            Kind::GetOrder | Kind::GetOrderHot => {
                let pool = if kind == Kind::GetOrder { &self.fixtures.orders } else { &self.fixtures.hot_orders };
                let (token, path) = pick(pool, seq)?;
                let req = client.get(format!("{base}{path}")).bearer_auth(token);
                exchange("get-order", req, StatusCode::OK).await.map(drop)
            }
            Kind::SessionCheck => {
                let token = pick(&self.fixtures.tokens, seq)?;
                let req = client.get(format!("{base}/v1/sessions/current")).bearer_auth(token);
                exchange("session-check", req, StatusCode::OK).await.map(drop)
            }
            // `run_once` has picked one step of the mix already.
            Kind::Mixed => Err(OpError::NoFixtures),
        }
    }
}

fn pick<T>(pool: &[T], seq: u64) -> Result<&T, OpError> {
    if pool.is_empty() {
        // Fixtures are created for every mix that reads them; an empty pool is a bug, shown as errors.
        return Err(OpError::NoFixtures);
    }
    let index = usize::try_from(seq % pool.len() as u64).expect("below the pool's length");
    Ok(&pool[index])
}

/// Distinguishes this run's emails from earlier runs against the same `--target`.
fn run_prefix() -> String {
    format!("bench-{:08x}", rand::random::<u32>())
}

/// Registers `email` and logs it in; returns the session token when the answer had one.
async fn register_and_login(client: &Client, base: &str, email: &str) -> Result<Option<String>, OpError> {
    signup(client, base, email).await.map(|(_, token)| token)
}

/// Registers `email` and logs it in; returns the new user's id and the session token, each when the
/// answer had one.
async fn signup(client: &Client, base: &str, email: &str) -> Result<(Option<String>, Option<String>), OpError> {
    let user = json!({"email": email, "name": "Bench User", "password": PASSWORD});
    let body = exchange("register", client.post(format!("{base}/v1/users")).json(&user), StatusCode::CREATED).await?;
    let id = json_str(&body, "id");
    let login = json!({"email": email, "password": PASSWORD});
    let body = exchange("login", client.post(format!("{base}/v1/sessions")).json(&login), StatusCode::CREATED).await?;
    Ok((id, json_str(&body, "token")))
}

fn json_str(body: &[u8], field: &str) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v[field].as_str().map(str::to_owned))
}

/// A signed-in user: the id that places it on a shard, and its session token.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub id: String,
    pub token: String,
}

/// Registers a fresh user with a run-unique email and logs it in.
pub async fn sign_up_fresh(client: &Client, base: &str, tag: &str, n: usize) -> Result<SignedIn> {
    let email = format!("{}-{tag}-{n}@bench.example", run_prefix());
    let (id, token) = signup(client, base, &email).await.map_err(|e| anyhow!("sign up {email}: {e}"))?;
    match (id, token) {
        (Some(id), Some(token)) => Ok(SignedIn { id, token }),
        _ => Err(anyhow!("sign up {email}: the answers lack the user's id or the session token")),
    }
}

/// Creates an order for the user of `token`; `key`, when given, is sent as its `Idempotency-Key`.
pub async fn create_order(
    client: &Client,
    base: &str,
    token: &str,
    key: Option<&str>,
) -> Result<bytes::Bytes, OpError> {
    let items = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..rng.gen_range(1..=3))
            .map(|_| {
                json!({
                    "sku": format!("sku-{}", rng.gen_range(0..1000)),
                    "quantity": rng.gen_range(1..=5),
                    "unit_price_cents": rng.gen_range(100..=10_000),
                })
            })
            .collect::<Vec<_>>()
    };
    let mut req = client.post(format!("{base}/v1/orders")).bearer_auth(token).json(&json!({ "items": items }));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    exchange("create-order", req, StatusCode::CREATED).await
}

/// Sends one request and reads its whole body, so the latency covers the answer and the connection can
/// go back to the pool.
async fn exchange(step: &'static str, req: RequestBuilder, expect: StatusCode) -> Result<bytes::Bytes, OpError> {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            OpError::Timeout { step }
        } else {
            OpError::Transport { step }
        }
    };
    let response = req.send().await.map_err(classify)?;
    let status = response.status();
    let body = response.bytes().await.map_err(classify)?;
    if status != expect {
        return Err(OpError::Status { step, status });
    }
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_walked_round_robin() {
        let pool = ["a", "b", "c"];
        let picked: Vec<_> = (0..5).map(|s| *pick(&pool, s).unwrap()).collect();
        assert_eq!(picked, ["a", "b", "c", "a", "b"]);
        assert!(pick::<&str>(&[], 0).is_err());
    }

    #[test]
    fn mixes_are_named_and_classed() {
        for kind in Kind::MIXES {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("nothing"), None);
        let reads: Vec<_> = Kind::MIXES.into_iter().filter(|k| k.class() == "read").map(Kind::name).collect();
        assert_eq!(reads, ["get-order", "get-order-hot", "session-check"]);
        assert_eq!((Kind::GetOrderHot.spread(), Kind::CreateOrderHot.is_hot()), (Kind::GetOrder, true));
        assert_eq!((Kind::GetOrder.spread(), Kind::GetOrder.is_hot()), (Kind::GetOrder, false));
        assert_eq!(Kind::from_name("mixed"), Some(Kind::Mixed));
        assert_eq!(Kind::CreateOrder.class(), "write");
        assert_eq!(json_str(br#"{"id":"01H","n":1}"#, "id").as_deref(), Some("01H"));
        assert_eq!(json_str(br#"{"n":1}"#, "id"), None);
        assert_eq!(json_str(b"not json", "id"), None);
    }

    #[test]
    fn the_mixed_load_is_70_20_10() {
        let mut counts = std::collections::HashMap::new();
        for seq in 0..100_000 {
            *counts.entry(mixed_step(seq)).or_insert(0u32) += 1;
        }
        let share = |k| f64::from(counts[&k]) / 100_000.0;
        assert!((share(Kind::GetOrder) - 0.7).abs() < 0.01, "{counts:?}");
        assert!((share(Kind::CreateOrder) - 0.2).abs() < 0.01, "{counts:?}");
        assert!((share(Kind::SessionCheck) - 0.1).abs() < 0.01, "{counts:?}");
        // Not tied to the round robin: the workers of a closed loop (seq ≡ w mod 32) each see every step.
        for worker in 0..32u64 {
            let steps: std::collections::HashSet<Kind> = (0..200).map(|i| mixed_step(worker + 32 * i)).collect();
            assert_eq!(steps.len(), 3, "worker {worker}");
        }
    }

    #[test]
    fn error_texts_name_the_step() {
        let e = OpError::Status { step: "login", status: StatusCode::SERVICE_UNAVAILABLE };
        assert_eq!(e.to_string(), "login: status 503");
        assert_eq!(OpError::Timeout { step: "get-order" }.to_string(), "get-order: timeout");
    }
}
