//! Operations endpoints and the cross-cutting HTTP rules: health, readiness, metrics, the OpenAPI
//! document, the admin view, request ids, 404/405, overload shedding and timeouts.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use simulations::{Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");
const ADMIN: &str = "admin-token-for-the-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_ADMIN_TOKEN", ADMIN), ("PLAYGROUND_SHARDS", "16")])
        .expect("node starts");
    let api = Api::new(&c.node.url);
    let health = api.get("/healthz", None).await.expect("healthz");
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    api.wait_ready(Duration::from_secs(30)).await.expect("the node serves");

    let (user, token) = api.signup("ops@example.com").await.expect("signup");
    api.create_order(&token, "A", None).await.expect("order");
    let metrics = api.get("/metrics", None).await.expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    for name in [
        "playground_http_requests_total",
        "playground_http_request_duration_seconds_bucket",
        "playground_actor_activations_total",
        "playground_actor_passivations_total",
        "playground_actor_restarts_total",
        "playground_storage_commit_duration_seconds_bucket",
        "playground_storage_write_duration_seconds_bucket",
        "playground_storage_batch_entries_bucket",
    ] {
        assert!(metrics.text.contains(name), "{name} missing from /metrics");
    }
    assert!(api.metric("playground_http_requests_total", "route=\"/v1/orders\"").await.expect("metric") >= 1.0);
    assert!(api.metric("playground_actor_activations_total", "kind=\"user\"").await.expect("metric") >= 1.0);
    assert!(api.metric("playground_storage_batch_entries_count", "").await.expect("metric") >= 1.0);
    assert!(!metrics.text.contains(&token), "no token in metrics");

    let doc = api.get("/openapi.json", None).await.expect("openapi");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.1.0");
    assert_eq!(doc.text, gateway::OPENAPI_JSON);

    let denied = api.get("/v1/cluster", None).await.expect("cluster");
    assert_eq!((denied.status, denied.code().as_str()), (401, "unauthorized"));
    assert_eq!(
        api.get("/v1/cluster", Some(&token)).await.expect("cluster").status,
        401,
        "a session token is not the admin token"
    );
    let view = api.get("/v1/cluster", Some(ADMIN)).await.expect("cluster");
    assert_eq!(view.status, 200, "{}", view.text);
    let body = view.json();
    assert_eq!(body["shard_count"], 16);
    assert_eq!(body["members"][0]["state"], "up");
    assert!(body["meta_version"].as_u64() >= Some(1), "a one-node cluster has its metadata record too: {body}");
    assert_eq!(body["members"].as_array().map(Vec::len), Some(1));
    let shards = body["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 16);
    assert!(shards.iter().all(|s| s["leader"] == body["node_id"] && s["replicas"].as_array().map(Vec::len) == Some(1)));
    let committed: u64 = shards.iter().filter_map(|s| s["commit_index"].as_u64()).sum();
    assert!(committed >= 4, "registration, claim, session and order were committed: {committed}");
    let _ = user;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rules_hold_for_every_answer() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let unknown = api.get("/v1/nothing-here", None).await.expect("get");
    assert_eq!((unknown.status, unknown.code().as_str()), (404, "not_found"));
    assert_eq!(unknown.header("content-type"), Some("application/problem+json"));
    let body = unknown.json();
    for f in ["type", "title", "status", "code", "detail", "request_id"] {
        assert!(!body[f].is_null(), "{f} in {body}");
    }
    assert_eq!(body["type"], "/problems/not_found");
    assert_eq!(body["request_id"].as_str(), unknown.header("x-request-id"));

    let wrong = api.send(Method::PUT, "/v1/users/abc", None, None, &[]).await.expect("put");
    assert_eq!((wrong.status, wrong.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(wrong.header("allow"), Some("GET, PATCH, DELETE"));

    let echoed =
        api.send(Method::GET, "/healthz", None, None, &[("x-request-id", "client-chosen-42")]).await.expect("get");
    assert_eq!(echoed.header("x-request-id"), Some("client-chosen-42"));
    let too_long = "r".repeat(129);
    let replaced = api.send(Method::GET, "/healthz", None, None, &[("x-request-id", &too_long)]).await.expect("get");
    let rid = replaced.header("x-request-id").expect("a request id");
    assert!(rid != too_long && !rid.is_empty());
    let problem =
        api.send(Method::GET, "/v1/sessions/current", None, None, &[("x-request-id", "trace-me")]).await.expect("get");
    assert_eq!(problem.json()["request_id"], "trace-me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    // Expensive password hashing keeps registrations in flight long enough to fill a bound of 2.
    let env = [
        ("PLAYGROUND_MAX_IN_FLIGHT", "2"),
        ("PLAYGROUND_ARGON2_MEMORY_KIB", "65536"),
        ("PLAYGROUND_ARGON2_ITERATIONS", "3"),
    ];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/users",
                    None,
                    &json!({"email": format!("load{i}@example.com"), "name": "L", "password": "plum anchor velvet 42"}),
                )
                .await
            })
        })
        .collect();
    let mut shed = 0;
    let mut created = 0;
    for t in tasks {
        let r = t.await.expect("join").expect("post");
        match r.status {
            201 => created += 1,
            503 => {
                shed += 1;
                assert_eq!(r.code(), "unavailable");
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert!(shed >= 1, "some requests were shed ({created} created)");
    assert!(created >= 1, "the bound admits requests");
    assert!(api.metric("playground_http_shed_total", "").await.expect("metric") >= shed as f64);
    assert_eq!(api.get("/healthz", None).await.expect("healthz").status, 200, "health is never shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_504() {
    let env = [
        ("PLAYGROUND_REQUEST_TIMEOUT", "10ms"),
        ("PLAYGROUND_ARGON2_MEMORY_KIB", "131072"),
        ("PLAYGROUND_ARGON2_ITERATIONS", "4"),
    ];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let r = api
        .post(
            "/v1/users",
            None,
            &json!({"email": "slow@example.com", "name": "S", "password": "plum anchor velvet 42"}),
        )
        .await
        .expect("post");
    assert_eq!((r.status, r.code().as_str()), (504, "timeout"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429() {
    let env = [("PLAYGROUND_RATE_LIMIT_PER_SECOND", "1"), ("PLAYGROUND_RATE_LIMIT_BURST", "3")];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let mut statuses = vec![];
    for _ in 0..6 {
        let r = api.get("/v1/sessions/current", None).await.expect("get");
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited");
            assert!(
                r.header("retry-after").and_then(|s| s.parse::<u32>().ok()).is_some_and(|s| s >= 1),
                "{:?}",
                r.headers
            );
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "the burst is admitted: {statuses:?}");
    assert!(statuses[3..].contains(&429), "then the rate applies: {statuses:?}");
    assert_eq!(api.get("/healthz", None).await.expect("healthz").status, 200, "operations endpoints are not limited");
    assert!(api.metric("playground_http_rate_limited_total", "").await.expect("metric") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_hold_passwords_hashes_or_tokens() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = std::process::Command::new(BIN)
        .args(["node", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "trace")
        .env("PLAYGROUND_ARGON2_MEMORY_KIB", "1024")
        .env("PLAYGROUND_PANIC_INJECTION", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the listening line");
    let url = line.trim().strip_prefix("listening on ").expect("listening line").to_owned();
    let api = Api::new(&url);
    let password = "a-very-secret-password";
    let id = api.register("logs@example.com", password).await.expect("register");
    let token = api.login("logs@example.com", password).await.expect("login");
    api.post("/v1/sessions", None, &json!({"email": "logs@example.com", "password": "wrong-password-here"}))
        .await
        .expect("bad login");
    api.send(
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(&token),
        Some(&json!({"password": "another-secret-pass", "current_password": password})),
        &[("x-fault-inject", "panic")],
    )
    .await
    .expect("patch");
    api.get("/v1/sessions/current", Some(&token)).await.expect("current");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("read log");
    assert!(text.len() > 100, "the node logged at trace level");
    let secret = token.rsplit('.').next().expect("token secret");
    for needle in [password, "wrong-password-here", "another-secret-pass", secret, "$argon2id$"] {
        assert!(!text.contains(needle), "the log holds a secret: {needle}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_shifts_the_timestamps_a_node_writes() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_CLOCK_SKEW_MS", "-86400000")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (_, token) = api.signup("skewed@example.com").await.expect("signup");
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    let before = now_ms();
    let created = api.create_order(&token, "S", None).await.expect("create").json()["created_at"].clone();
    let after = now_ms();
    let created = created.as_str().expect("created_at").to_owned();
    // A day earlier than the real clock while the create ran, to the second.
    const DAY: i64 = 86_400_000;
    let seconds: Vec<String> = (before - DAY - 1_000..=after - DAY + 1_000)
        .step_by(500)
        .map(|ms| gateway::rfc3339(ms)[..19].to_owned())
        .collect();
    assert!(
        seconds.contains(&created[..19].to_owned()),
        "created {created}, a day before now is {:?}",
        seconds.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    // Every series a made-up method could add is there after the first few.
    for i in 0..5 {
        let method = Method::from_bytes(format!("WARMUP{i}").as_bytes()).expect("a method token");
        api.send(method, "/v1/orders", None, None, &[]).await.expect("answered");
    }
    // The first scrape adds its own route's series to the next one.
    api.get("/metrics", None).await.expect("metrics");
    let before = api.get("/metrics", None).await.expect("metrics").text.len();
    for i in 0..500 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).expect("a method token");
        let answer = api.send(method, "/v1/orders", None, None, &[]).await.expect("answered");
        assert_eq!(answer.status, 405, "a method the route does not take");
    }
    let after = api.get("/metrics", None).await.expect("metrics");
    assert!(!after.text.contains("MADEUP"), "a made-up method became a label");
    assert!(after.text.contains("method=\"other\""), "made-up methods are counted as other");
    // Counters and histogram sums get longer as they count, by a few digits; a new method series would
    // add over a kilobyte (a counter and a histogram of 14 buckets) each.
    let grown = after.text.len().saturating_sub(before);
    assert!(grown < 2048, "/metrics grew by {grown} bytes over 500 made-up methods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_forbids_sniffing_and_framing() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let answers = [
        api.get("/healthz", None).await.expect("healthz"),
        api.get("/nowhere", None).await.expect("404"),
        api.get("/v1/sessions/current", None).await.expect("401"),
        api.send_raw(Method::POST, "/v1/users", None, Some("text/plain"), b"x".to_vec()).await.expect("415"),
    ];
    for answer in &answers {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{}", answer.status);
        assert_eq!(
            answer.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{}",
            answer.status
        );
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![200, 404, 401, 415]);
}
