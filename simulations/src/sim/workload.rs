//! The seeded workload: client tasks through the gateways, each recording every operation it invokes and
//! how it completed. Creates carry an `Idempotency-Key` and are retried with the same key while their
//! outcome is unknown; each order's sku is its key, so that the checkers can find duplicates.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::history::{Event, History};
use crate::client::{Api, Response};

/// A request that has not answered within this long has an unknown outcome.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past the end of the workload a create with an unknown outcome is still retried.
const RETRY_GRACE: Duration = Duration::from_secs(10);
pub const PASSWORD: &str = "correct horse battery";
/// What the body of a gateway's 503 says when it sheds a request it has not started (too many in flight).
const SHED: &str = "too many requests in flight";

/// A signed-up user a client acts as.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub id: String,
    pub token: String,
}

/// The header that makes the entity handling a request panic (on a node with `faults.panic_injection`).
const PANIC: (&str, &str) = ("x-fault-inject", "panic");

/// Invokes one operation and records its invocation and completion; returns the completion type and the
/// response (if any).
async fn call<Fut>(
    h: &History,
    process: u64,
    f: &str,
    key: &str,
    args: Value,
    describe: impl FnOnce(&Response) -> Value,
    request: Fut,
) -> (&'static str, Option<Response>)
where
    Fut: Future<Output = anyhow::Result<Response>>,
{
    call_as(h, process, f, key, args, describe, request, false).await
}

/// Like [`call`]; with `unknown` (a request that asked its entity to panic) every completion is `info`.
#[allow(clippy::too_many_arguments)]
async fn call_as<Fut>(
    h: &History,
    process: u64,
    f: &str,
    key: &str,
    args: Value,
    describe: impl FnOnce(&Response) -> Value,
    request: Fut,
    unknown: bool,
) -> (&'static str, Option<Response>)
where
    Fut: Future<Output = anyhow::Result<Response>>,
{
    let intended = h.now();
    let event = |kind: &str, value: Value, at: u64| Event {
        process,
        kind: kind.to_owned(),
        f: f.to_owned(),
        key: key.to_owned(),
        value,
        intended,
        at,
    };
    h.push(event("invoke", args, intended));
    let (kind, value, response) = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Err(_) => ("info", json!({"error": "timeout"}), None),
        Ok(Err(e)) => ("info", json!({"error": format!("{e:#}")}), None),
        Ok(Ok(r)) => match r.status {
            200..=299 => ("ok", describe(&r), Some(r)),
            // A 503 that sheds load refuses before doing anything: a clear refusal.
            503 if r.text.contains(SHED) => ("fail", json!({"status": r.status, "code": r.code()}), Some(r)),
            // Any other 5xx may have been applied or not: unknown. Everything else is a clear refusal.
            500..=599 => ("info", json!({"status": r.status, "code": r.code()}), Some(r)),
            _ => ("fail", json!({"status": r.status, "code": r.code()}), Some(r)),
        },
    };
    let kind = if unknown { "info" } else { kind };
    h.push(event(kind, value, h.now()));
    (kind, response)
}

pub async fn register(h: &History, process: u64, gw: &Api, email: &str) -> (&'static str, Option<Response>) {
    let body = json!({"email": email, "name": "Sim User", "password": PASSWORD});
    call(
        h,
        process,
        "register",
        email,
        json!({"email": email}),
        |r| json!({"id": r.field("id")}),
        gw.post("/v1/users", None, &body),
    )
    .await
}

/// Registers and logs in, retrying unknown outcomes until `until`.
pub async fn signup(h: &History, process: u64, gws: &[Api], email: &str, until: Instant) -> anyhow::Result<User> {
    let mut id = None;
    let mut attempt = 0usize;
    while id.is_none() {
        anyhow::ensure!(Instant::now() < until, "could not register {email}");
        let gw = &gws[attempt % gws.len()];
        attempt += 1;
        match register(h, process, gw, email).await {
            ("ok", Some(r)) => id = Some(r.field("id")),
            // An earlier attempt with an unknown outcome took effect.
            ("fail", Some(r)) if r.code() == "email_taken" && attempt > 1 => id = Some(String::new()),
            ("fail", Some(r)) => anyhow::bail!("register {email}: {} {}", r.status, r.text),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    loop {
        anyhow::ensure!(Instant::now() < until, "could not log in as {email}");
        let gw = &gws[attempt % gws.len()];
        attempt += 1;
        let body = json!({"email": email, "password": PASSWORD});
        let (kind, r) = call(
            h,
            process,
            "login",
            email,
            json!({"email": email}),
            |_| Value::Null,
            gw.post("/v1/sessions", None, &body),
        )
        .await;
        if let ("ok", Some(r)) = (kind, r) {
            let token = r.field("token");
            let mut id = id.unwrap_or_default();
            if id.is_empty() {
                id = gw.get("/v1/sessions/current", Some(&token)).await?.field("user_id");
            }
            return Ok(User { email: email.to_owned(), id, token });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates one order with `key`, retrying the same key while the outcome is unknown. Returns its id.
pub async fn create_order(
    h: &History,
    process: u64,
    gws: &[Api],
    user: &User,
    key: &str,
    until: Instant,
) -> Option<String> {
    let mut attempt = process as usize;
    loop {
        let gw = &gws[attempt % gws.len()];
        attempt += 1;
        let uid = user.id.clone();
        let (kind, r) = call(
            h,
            process,
            "create_order",
            key,
            json!({"user": user.id, "sku": key}),
            |r| json!({"id": r.field("id"), "user": uid, "status": r.field("status")}),
            gw.create_order(&user.token, key, Some(key)),
        )
        .await;
        match (kind, r) {
            ("ok", Some(r)) => return Some(r.field("id")),
            ("fail", _) => return None,
            _ if Instant::now() >= until => return None,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn transition(h: &History, process: u64, gw: &Api, user: &User, id: &str, action: &str, panic: bool) {
    let path = format!("/v1/orders/{id}/{action}");
    let headers: &[(&str, &str)] = if panic { &[PANIC] } else { &[] };
    call_as(
        h,
        process,
        action,
        id,
        json!({"id": id, "panic": panic}),
        |r| json!({"id": id, "status": r.json()["status"]}),
        gw.send(Method::POST, &path, Some(&user.token), None, headers),
        panic,
    )
    .await;
}

/// A session's life: log in, log out, and after the logout is acknowledged use its token again, through
/// every gateway (I6: each use must be refused). `tag` names the session in the history.
async fn session_cycle(h: &History, process: u64, gws: &[Api], user: &User, tag: &str) {
    let gw = &gws[process as usize % gws.len()];
    let body = json!({"email": user.email, "password": PASSWORD});
    let (kind, r) = call(
        h,
        process,
        "login",
        tag,
        json!({"email": user.email}),
        |_| Value::Null,
        gw.post("/v1/sessions", None, &body),
    )
    .await;
    let token = match (kind, r) {
        ("ok", Some(r)) => r.field("token"),
        _ => return,
    };
    let (kind, _) =
        call(h, process, "logout", tag, Value::Null, |_| Value::Null, gw.delete("/v1/sessions/current", Some(&token)))
            .await;
    if kind != "ok" {
        return;
    }
    for gw in gws {
        call(
            h,
            process,
            "use_after_logout",
            tag,
            json!({"gateway": gw.base()}),
            |r| json!({"status": r.status}),
            gw.get("/v1/sessions/current", Some(&token)),
        )
        .await;
    }
}

/// How long the reader waits for one answer.
const READER_PATIENCE: Duration = Duration::from_millis(500);

/// A client that only reads `user`'s orders, each time through a member drawn from `members` (nodes
/// serve the API too): what a client connected to a node cut off from the others would see. It learns the
/// orders from their owner's list.
pub async fn reader(h: History, process: u64, members: Vec<Api>, user: User, seed: u64, until: Instant) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(process));
    let mut orders: Vec<String> = vec![];
    while Instant::now() < until {
        let member = &members[rng.gen_range(0..members.len())];
        // A member that cannot reach the shard's leader holds a request for the whole request timeout; the
        // reader gives up sooner and goes on through another.
        let patient = |request| async move {
            tokio::time::timeout(READER_PATIENCE, request).await.map_err(|_| anyhow::anyhow!("no answer in time"))?
        };
        if orders.is_empty() || rng.gen_range(0..10) == 0 {
            let path = format!("/v1/users/{}/orders?limit=100", user.id);
            if let Ok(r) = patient(member.get(&path, Some(&user.token))).await {
                let items = r.json()["items"].as_array().cloned().unwrap_or_default();
                let ids = items.iter().filter_map(|o| o["id"].as_str().map(str::to_owned));
                orders = ids.collect();
            }
        } else {
            let id = orders[rng.gen_range(0..orders.len())].clone();
            let path = format!("/v1/orders/{id}");
            let read = patient(member.get(&path, Some(&user.token)));
            call(&h, process, "read", &id, json!({"id": id}), |r| json!({"status": r.json()["status"]}), read).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..20))).await;
    }
}

/// One client: a seeded mix of creates (some repeating an earlier key on purpose), pays, cancels, reads,
/// lists and login/logout cycles until `until`. While `panic` is on, a share of its pays, cancels and reads
/// ask their entity to panic. Without `think`, it sends its next operation at once.
#[allow(clippy::too_many_arguments)]
pub async fn client(
    h: History,
    process: u64,
    gws: Vec<Api>,
    user: User,
    seed: u64,
    until: Instant,
    panic: Arc<AtomicBool>,
    think: bool,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(process));
    let mut orders: Vec<String> = vec![];
    let mut n = 0;
    let mut sessions = 0;
    while Instant::now() < until {
        let gw = &gws[rng.gen_range(0..gws.len())];
        let roll = rng.gen_range(0..100);
        let inject = panic.load(Ordering::SeqCst) && rng.gen_range(0..100) < 30;
        if roll < 36 || orders.is_empty() {
            let key = format!("p{process}-{n}");
            n += 1;
            if let Some(id) = create_order(&h, process, &gws, &user, &key, until + RETRY_GRACE).await {
                orders.push(id);
            }
        } else if roll < 40 {
            // The same key again, on purpose: it must give back the same order (I5).
            let key = format!("p{process}-{}", rng.gen_range(0..n));
            create_order(&h, process, &gws, &user, &key, until + RETRY_GRACE).await;
        } else if roll < 75 {
            let id = orders[rng.gen_range(0..orders.len())].clone();
            let action = if roll < 60 { "pay" } else { "cancel" };
            transition(&h, process, gw, &user, &id, action, inject).await;
        } else if roll < 88 {
            let id = orders[rng.gen_range(0..orders.len())].clone();
            let path = format!("/v1/orders/{id}");
            let headers: &[(&str, &str)] = if inject { &[PANIC] } else { &[] };
            call_as(
                &h,
                process,
                "read",
                &id,
                json!({"id": id, "panic": inject}),
                |r| json!({"status": r.json()["status"]}),
                gw.send(Method::GET, &path, Some(&user.token), None, headers),
                inject,
            )
            .await;
        } else if roll < 96 {
            let path = format!("/v1/users/{}/orders?limit=100", user.id);
            call(
                &h,
                process,
                "list",
                &user.id,
                Value::Null,
                |r| json!({"count": r.json()["items"].as_array().map(Vec::len)}),
                gw.get(&path, Some(&user.token)),
            )
            .await;
        } else {
            let tag = format!("p{process}-s{sessions}");
            sessions += 1;
            session_cycle(&h, process, &gws, &user, &tag).await;
        }
        let pause = rng.gen_range(10..40);
        if think {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Registrations racing for one email, one per process, spread over the gateways.
pub async fn race(h: History, first_process: u64, gws: Vec<Api>, email: String, racers: u64) {
    let mut tasks = vec![];
    for i in 0..racers {
        let (h, gw, email) = (h.clone(), gws[i as usize % gws.len()].clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            register(&h, first_process + i, &gw, &email).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Every order of `user`, read back page by page (each page retried for up to 10 s).
pub async fn read_back(gw: &Api, user: &User) -> anyhow::Result<Vec<Value>> {
    let mut orders = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{}/orders?limit=100&cursor={c}", user.id),
            None => format!("/v1/users/{}/orders?limit=100", user.id),
        };
        let page = crate::process::eventually(Duration::from_secs(10), &format!("read back {path}"), || async {
            let r = gw.get(&path, Some(&user.token)).await.ok()?;
            (r.status == 200).then(|| r.json())
        })
        .await?;
        orders.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(orders),
        }
    }
}
