//! Sessions through the public HTTP API: login, the current session, listing, revocation, expiry.

use std::time::Duration;

use serde_json::json;
use simulations::{eventually, Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_logout_and_revocation() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let id = api.register("sess@example.com", "correct horse battery").await.expect("register");

    let wrong = api
        .post("/v1/sessions", None, &json!({"email": "sess@example.com", "password": "wrong password"}))
        .await
        .expect("login");
    let unknown = api
        .post("/v1/sessions", None, &json!({"email": "nobody@example.com", "password": "wrong password"}))
        .await
        .expect("login");
    assert_eq!((wrong.status, wrong.code().as_str()), (401, "invalid_credentials"));
    assert_eq!((unknown.status, unknown.code().as_str()), (401, "invalid_credentials"));
    assert_eq!(wrong.json()["detail"], unknown.json()["detail"], "the same answer whether the email exists or not");
    let incomplete = api.post("/v1/sessions", None, &json!({"email": "sess@example.com"})).await.expect("login");
    assert_eq!((incomplete.status, incomplete.code().as_str()), (422, "validation_failed"));

    let first = api
        .post("/v1/sessions", None, &json!({"email": " SESS@example.com", "password": "correct horse battery"}))
        .await
        .expect("login");
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("location"), Some("/v1/sessions/current"));
    let t1 = first.field("token");
    assert!(t1.len() >= 43, "a token carries at least 128 bits: {t1}");
    assert_eq!(first.field("user_id"), id);
    for f in ["session_id", "created_at", "expires_at", "last_seen_at"] {
        assert!(first.json()[f].is_string(), "{f} in {}", first.text);
    }
    let t2 = api.login("sess@example.com", "correct horse battery").await.expect("login");

    let current = api.get("/v1/sessions/current", Some(&t1)).await.expect("current");
    assert_eq!(current.status, 200);
    assert_eq!(current.field("session_id"), first.field("session_id"));
    assert!(current.json().get("token").is_none(), "the token is shown once");

    let list = api.get(&format!("/v1/users/{id}/sessions"), Some(&t1)).await.expect("list");
    assert_eq!(list.status, 200);
    let items = list.json()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    assert!(items[0]["created_at"].as_str() >= items[1]["created_at"].as_str(), "newest first");

    let (other_id, other_token) = api.signup("someone@example.com").await.expect("signup");
    assert_eq!(api.get(&format!("/v1/users/{other_id}/sessions"), Some(&t1)).await.expect("list").status, 403);
    let s2 = api.get("/v1/sessions/current", Some(&t2)).await.expect("current").field("session_id");
    let foreign = api.delete(&format!("/v1/sessions/{s2}"), Some(&other_token)).await.expect("delete");
    assert_eq!((foreign.status, foreign.code().as_str()), (404, "not_found"));
    assert_eq!(api.delete(&format!("/v1/sessions/{s2}"), Some(&t1)).await.expect("delete").status, 204);
    assert_eq!(api.get("/v1/sessions/current", Some(&t2)).await.expect("current").status, 401, "revoked at once");
    assert_eq!(api.delete(&format!("/v1/sessions/{s2}"), Some(&t1)).await.expect("delete").status, 404);

    assert_eq!(api.delete("/v1/sessions/current", Some(&t1)).await.expect("logout").status, 204);
    for path in ["/v1/sessions/current".to_owned(), format!("/v1/users/{id}")] {
        assert_eq!(api.get(&path, Some(&t1)).await.expect("get").status, 401, "{path} after logout");
    }
    assert_eq!(api.delete("/v1/sessions/current", Some(&t1)).await.expect("logout").status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_their_ttl() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_SESSION_TTL", "2s")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (id, token) = api.signup("ttl@example.com").await.expect("signup");
    assert_eq!(api.get("/v1/sessions/current", Some(&token)).await.expect("current").status, 200);
    eventually(Duration::from_secs(10), "the token expires", || async {
        let r = api.get("/v1/sessions/current", Some(&token)).await.ok()?;
        (r.status == 401).then_some(())
    })
    .await
    .expect("expiry");
    let fresh = api.login("ttl@example.com", "correct horse battery").await.expect("login");
    let list = api.get(&format!("/v1/users/{id}/sessions"), Some(&fresh)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1), "expired sessions are not listed");
}

/// The resident memory of a process, in bytes, as the kernel counts it.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_logins_leaves_memory_where_it_was() {
    // The product's own hashing cost, and budgets for failed logins that this burst does not reach, so
    // that every attempt is hashed.
    let env = [
        ("PLAYGROUND_ARGON2_MEMORY_KIB", "19456"),
        ("PLAYGROUND_ARGON2_ITERATIONS", "2"),
        ("PLAYGROUND_LOGIN_ACCOUNT_BURST", "1000"),
        ("PLAYGROUND_LOGIN_CLIENT_BURST", "1000"),
    ];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    api.signup("burst@example.com").await.expect("signup");
    let before = resident_bytes(c.node.pid());
    let bound = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (api, bound) = (api.clone(), bound.clone());
        attempts.spawn(async move {
            let _permit = bound.acquire_owned().await.expect("bound");
            let email = if i % 2 == 0 { "burst@example.com".to_owned() } else { format!("nobody{i}@example.com") };
            api.post("/v1/sessions", None, &json!({"email": email, "password": format!("wrong password {i}")}))
                .await
                .expect("login")
                .status
        });
    }
    while let Some(status) = attempts.join_next().await {
        assert_eq!(status.expect("join"), 401, "every attempt was checked and refused");
    }
    let pid = c.node.pid();
    let settled = eventually(Duration::from_secs(5), "resident memory within 100 MiB of before", || async {
        let after = resident_bytes(pid);
        (after < before + 100 * 1024 * 1024).then_some(after)
    })
    .await;
    let after = settled.unwrap_or_else(|e| {
        panic!(
            "a burst of failed logins grew the node from {} MiB to {} MiB: {e}",
            before >> 20,
            resident_bytes(pid) >> 20
        )
    });
    eprintln!("resident before the burst: {} MiB, within 5 s after: {} MiB", before >> 20, after >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_refused_for_a_while_without_locking_anyone_out() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (id, token) = api.signup("target@example.com").await.expect("signup");
    for _ in 0..15 {
        api.login("target@example.com", "correct horse battery").await.expect("a successful login costs no budget");
    }
    let mut statuses = vec![];
    for i in 0..40 {
        let body = json!({"email": " Target@Example.com", "password": format!("guess number {i}")});
        let r = api.post("/v1/sessions", None, &body).await.expect("login");
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited", "{}", r.text);
            let wait = r.header("retry-after").and_then(|s| s.parse::<u32>().ok());
            assert!(wait.is_some_and(|s| (1..=30).contains(&s)), "Retry-After in seconds: {:?}", r.headers);
        } else {
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_credentials"), "{}", r.text);
        }
        statuses.push(r.status);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("429s out of 40 failed logins in a row: {refused}");
    assert_eq!(&statuses[..10], &[401; 10], "the first failures are answered as usual: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "then every one is refused: {statuses:?}");
    let me = api.get(&format!("/v1/users/{id}"), Some(&token)).await.expect("get");
    assert_eq!(me.status, 200, "a session already open keeps working");
    let other = api.signup("bystander@example.com").await;
    assert!(other.is_ok(), "another account from the same address logs in: {other:?}");
    assert!(api.metric("playground_http_logins_throttled_total", "").await.expect("metric") >= 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_failed_logins_ends_on_its_own() {
    let env = [("PLAYGROUND_LOGIN_ACCOUNT_BURST", "2"), ("PLAYGROUND_LOGIN_ACCOUNT_PERIOD", "1s")];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    api.signup("patient@example.com").await.expect("signup");
    let wrong = json!({"email": "patient@example.com", "password": "not the password"});
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(api.post("/v1/sessions", None, &wrong).await.expect("login").status);
    }
    assert_eq!(statuses, vec![401, 401, 429, 429]);
    let right = json!({"email": "patient@example.com", "password": "correct horse battery"});
    assert_eq!(api.post("/v1/sessions", None, &right).await.expect("login").status, 429, "refused, right or not");
    let admitted = eventually(Duration::from_secs(10), "the period gives a login back", || {
        let (api, right) = (api.clone(), right.clone());
        async move { (api.post("/v1/sessions", None, &right).await.ok()?.status == 201).then_some(()) }
    })
    .await;
    assert!(admitted.is_ok(), "{admitted:?}");
}
