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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hello,
    RegisterLogin,
    CreateOrder,
    GetOrder,
    SessionCheck,
}

impl Kind {
    /// The mixes, in the order `--mix all` runs them.
    pub const MIXES: [Kind; 4] = [Kind::RegisterLogin, Kind::CreateOrder, Kind::GetOrder, Kind::SessionCheck];

    /// The mix whose `name` this is.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::MIXES.into_iter().chain([Self::Hello]).find(|k| k.name() == name)
    }

    /// `read` for the mixes that only read, `write` for those that make durable changes.
    pub fn class(self) -> &'static str {
        match self {
            Self::Hello | Self::GetOrder | Self::SessionCheck => "read",
            Self::RegisterLogin | Self::CreateOrder => "write",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::RegisterLogin => "register-login",
            Self::CreateOrder => "create-order",
            Self::GetOrder => "get-order",
            Self::SessionCheck => "session-check",
        }
    }
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

/// Pre-created state the mixes read: bearer tokens of pool users, and orders with their owner's token.
#[derive(Clone, Debug, Default)]
pub struct Fixtures {
    tokens: Arc<[String]>,
    orders: Arc<[(String, String)]>,
}

impl Fixtures {
    /// Creates what `kinds` need: `users` users with a session each, and `orders_per_user` orders each
    /// when a mix reads orders.
    pub async fn create(
        client: &Client,
        base: &str,
        kinds: &[Kind],
        users: usize,
        orders_per_user: usize,
    ) -> Result<Self> {
        let need_users = kinds.iter().any(|k| matches!(k, Kind::CreateOrder | Kind::GetOrder | Kind::SessionCheck));
        if !need_users {
            return Ok(Self::default());
        }
        eprintln!("bench: fixtures: registering {users} users…");
        let prefix = run_prefix();
        let tokens: Vec<String> = futures::stream::iter(0..users)
            .map(|i| {
                let email = format!("{prefix}-pool-{i}@bench.example");
                async move {
                    let token = register_and_login(client, base, &email).await.map_err(|e| anyhow!("{e}"))?;
                    token.with_context(|| format!("fixture user {email}: the login answer has no token"))
                }
            })
            .buffer_unordered(FIXTURE_CONCURRENCY)
            .try_collect()
            .await
            .context("create the fixture users")?;
        let mut orders = Vec::new();
        if kinds.contains(&Kind::GetOrder) {
            eprintln!("bench: fixtures: creating {} orders…", users * orders_per_user);
            orders = futures::stream::iter(tokens.iter().flat_map(|t| std::iter::repeat_n(t, orders_per_user)))
                .map(|token| async move {
                    let body = create_order(client, base, token, None).await.map_err(|e| anyhow!("{e}"))?;
                    let id = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .context("the order answer has no id")?;
                    Ok::<_, anyhow::Error>((token.clone(), format!("{base}/v1/orders/{id}")))
                })
                .buffer_unordered(FIXTURE_CONCURRENCY)
                .try_collect()
                .await
                .context("create the fixture orders")?;
        }
        Ok(Self { tokens: tokens.into(), orders: orders.into() })
    }
}

/// One mix (or the baseline) bound to its target, its client and its fixtures.
pub struct Workload {
    kind: Kind,
    client: Client,
    base: String,
    fixtures: Fixtures,
    /// Unique per registration across every phase of this run, and across runs by the prefix.
    prefix: String,
    registrations: AtomicU64,
}

impl Workload {
    pub fn new(kind: Kind, client: Client, base: &str, fixtures: Fixtures) -> Self {
        Self { kind, client, base: base.to_owned(), fixtures, prefix: run_prefix(), registrations: AtomicU64::new(0) }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// One operation; `seq` picks its fixtures, round robin.
    pub async fn run_once(&self, seq: u64) -> Result<(), OpError> {
        let (client, base) = (&self.client, self.base.as_str());
        match self.kind {
            Kind::Hello => exchange("hello", client.get(format!("{base}/hello")), StatusCode::OK).await.map(drop),
            Kind::RegisterLogin => {
                let n = self.registrations.fetch_add(1, Ordering::Relaxed);
                let email = format!("{}-{n}@bench.example", self.prefix);
                register_and_login(client, base, &email).await.map(drop)
            }
            Kind::CreateOrder => create_order(client, base, pick(&self.fixtures.tokens, seq)?, None).await.map(drop),
            Kind::GetOrder => {
                let (token, url) = pick(&self.fixtures.orders, seq)?;
                exchange("get-order", client.get(url).bearer_auth(token), StatusCode::OK).await.map(drop)
            }
            Kind::SessionCheck => {
                let token = pick(&self.fixtures.tokens, seq)?;
                let req = client.get(format!("{base}/v1/sessions/current")).bearer_auth(token);
                exchange("session-check", req, StatusCode::OK).await.map(drop)
            }
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
        assert_eq!(reads, ["get-order", "session-check"]);
        assert_eq!(Kind::CreateOrder.class(), "write");
        assert_eq!(json_str(br#"{"id":"01H","n":1}"#, "id").as_deref(), Some("01H"));
        assert_eq!(json_str(br#"{"n":1}"#, "id"), None);
        assert_eq!(json_str(b"not json", "id"), None);
    }

    #[test]
    fn error_texts_name_the_step() {
        let e = OpError::Status { step: "login", status: StatusCode::SERVICE_UNAVAILABLE };
        assert_eq!(e.to_string(), "login: status 503");
        assert_eq!(OpError::Timeout { step: "get-order" }.to_string(), "get-order: timeout");
    }
}
