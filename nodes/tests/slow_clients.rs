//! Clients that are slow, idle, malformed or many, or that claim to be someone else: each holds its
//! own connection at most, never what other clients need (I8). Every test applies the attack against a
//! real node on loopback and checks what a normal client sees meanwhile.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use simulations::{eventually, Api, Launch, NodeProcess, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// A request head that announces a body of 1,000 bytes, and the body's first byte: the rest never comes.
fn slow_order_head(host: &str, token: &str) -> String {
    format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    )
}

/// What a normal client sees: its own user, and a new order.
async fn normal_requests_succeed(api: &Api, user: &str, token: &str) {
    let me = api.get(&format!("/v1/users/{user}"), Some(token)).await.expect("get user");
    assert_eq!(me.status, 200, "a normal request during the attack: {}", me.text);
    let order = api.create_order(token, "NORMAL", None).await.expect("create order");
    assert_eq!(order.status, 201, "a normal write during the attack: {}", order.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_slow_http1_bodies_never_make_a_normal_request_fail() {
    // More slow bodies than the node takes requests at once (1,024 by default); the body deadline is
    // long, so that the attack lasts the whole test.
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_BODY_READ_TIMEOUT", "120s")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("slow-bodies@example.com").await.expect("signup");
    let host = host_port(&c.node.url);
    let head = slow_order_head(&host, &token);
    let mut slow = Vec::with_capacity(1_100);
    for _ in 0..1_100 {
        let mut s = TcpStream::connect(&host).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("send head");
        slow.push(s);
    }
    eventually(Duration::from_secs(60), "the node holds every slow connection", || async {
        (api.metric("playground_http_connections", "").await.ok()? >= 1_100.0).then_some(())
    })
    .await
    .expect("slow connections open");
    for _ in 0..5 {
        normal_requests_succeed(&api, &user, &token).await;
    }
    assert_eq!(api.metric("playground_http_shed_total", "").await.expect("metric"), 0.0, "nothing was shed");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_http2_connections_of_two_hundred_slow_streams_never_make_a_normal_request_fail() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_BODY_READ_TIMEOUT", "120s")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("slow-streams@example.com").await.expect("signup");
    let host = host_port(&c.node.url);
    let mut streams = tokio::task::JoinSet::new();
    let mut opened = vec![];
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..6 {
        let tcp = TcpStream::connect(&host).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("cleartext HTTP/2 handshake");
        opened.push(tokio::spawn(connection));
        for _ in 0..200 {
            let (client, host, token, started) = (client.clone(), host.clone(), token.clone(), started.clone());
            streams.spawn(async move {
                // Streams past the server's limit wait here for one to close: none does.
                let mut client = client.ready().await?;
                let request = http::Request::post(format!("http://{host}/v1/orders"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("content-length", "1000")
                    .body(())
                    .expect("request");
                let (answer, mut body) = client.send_request(request, false)?;
                body.send_data(Bytes::from_static(b"{"), false)?;
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.await;
                drop(body);
                answer.map(|_| ())
            });
        }
    }
    eventually(Duration::from_secs(60), "the node holds the six connections", || async {
        (api.metric("playground_http_connections", "").await.ok()? >= 6.0).then_some(())
    })
    .await
    .expect("connections open");
    // Every stream the server allows (100 per connection) has sent its head and the first byte of its body.
    eventually(Duration::from_secs(60), "600 slow streams under way", || async {
        (started.load(std::sync::atomic::Ordering::SeqCst) >= 600).then_some(())
    })
    .await
    .expect("streams under way");
    for _ in 0..5 {
        normal_requests_succeed(&api, &user, &token).await;
    }
    assert_eq!(api.metric("playground_http_shed_total", "").await.expect("metric"), 0.0, "nothing was shed");
    while let Some(done) = streams.try_join_next() {
        let done = done.expect("stream task");
        assert!(done.is_err(), "no slow stream was answered: their bodies are still coming");
    }
    streams.abort_all();
    for connection in opened {
        connection.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_slow_gets_408_and_a_silent_connection_is_closed() {
    let env = [("PLAYGROUND_BODY_READ_TIMEOUT", "1s"), ("PLAYGROUND_HEADER_READ_TIMEOUT", "1s")];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let (_, token) = api.signup("deadlines@example.com").await.expect("signup");
    let host = host_port(&c.node.url);

    let mut s = TcpStream::connect(&host).await.expect("connect");
    s.write_all(slow_order_head(&host, &token).as_bytes()).await.expect("send head");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut answer))
        .await
        .expect("the node answers and closes within the deadline")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(api.metric("playground_http_body_timeouts_total", "").await.expect("metric") >= 1.0);

    // Half a request head, then nothing; and a connection that never sends anything.
    let mut half = TcpStream::connect(&host).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("send");
    let mut idle = TcpStream::connect(&host).await.expect("connect");
    for (what, s) in [("half a head", &mut half), ("an idle connection", &mut idle)] {
        let mut buf = vec![];
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{what} is closed by the node");
    }

    // A kept-alive connection is closed once it waits longer than the deadline for its next request.
    let mut kept = TcpStream::connect(&host).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("send");
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = vec![];
    let closed = tokio::time::timeout(Duration::from_secs(20), kept.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle kept-alive connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_closed_and_the_rest_still_served() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_MAX_CONNECTIONS", "20")]).expect("node starts");
    let host = host_port(&c.node.url);
    let mut held = vec![];
    for _ in 0..20 {
        held.push(TcpStream::connect(&host).await.expect("connect"));
    }
    // The 21st is accepted and closed at once.
    let mut extra = TcpStream::connect(&host).await.expect("the kernel still accepts");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![];
    let read = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed without an answer: {:?}", String::from_utf8_lossy(&buf));
    drop(held);
    let api = Api::new(&c.node.url);
    let served = eventually(Duration::from_secs(10), "the node serves again", || async {
        (api.get("/healthz", None).await.ok()?.status == 200).then_some(())
    })
    .await;
    served.expect("freed connections make room");
    assert!(api.metric("playground_http_connections_refused_total", "").await.expect("metric") >= 1.0);
}

/// The status and `Retry-After` of an unauthenticated read that says it comes from `client`.
async fn forwarded_for(api: &Api, client: &str) -> (u16, Option<String>) {
    let r =
        api.send(Method::GET, "/v1/orders/none", None, None, &[("x-forwarded-for", client)]).await.expect("request");
    (r.status, r.header("retry-after").map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_believes_forwarded_addresses_from_trusted_proxies_only() {
    let limited = [("PLAYGROUND_RATE_LIMIT_PER_SECOND", "1"), ("PLAYGROUND_RATE_LIMIT_BURST", "3")];

    // Nobody is trusted: a client cannot escape its limit by naming other addresses.
    let c = TestCluster::start(BIN.as_ref(), &limited).expect("node starts");
    let api = Api::new(&c.node.url);
    let mut statuses = vec![];
    for i in 0..6 {
        let spoofed = format!("198.51.100.{i}");
        let r = api
            .send(Method::GET, "/v1/orders/none", None, None, &[("x-forwarded-for", &spoofed)])
            .await
            .expect("request");
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "a spoofed X-Forwarded-For does not reset the limit: {statuses:?}");
    drop(c);

    // The loopback proxy is trusted: clients behind it are limited one by one.
    let mut env = limited.to_vec();
    env.push(("PLAYGROUND_TRUSTED_PROXIES", "127.0.0.0/8"));
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let mut first = vec![];
    for _ in 0..3 {
        first.push(forwarded_for(&api, "198.51.100.1").await.0);
    }
    assert!(first.iter().all(|s| *s == 401), "within its burst: {first:?}");
    let (status, retry_after) = forwarded_for(&api, "198.51.100.1").await;
    assert_eq!(status, 429, "one client over its rate");
    assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok_and(|n| n >= 1)), "with Retry-After");
    assert_eq!(forwarded_for(&api, "198.51.100.2").await.0, 401, "another client behind the proxy is not limited");
    let r = api
        .send(Method::GET, "/v1/orders/none", None, None, &[("forwarded", "for=\"[2001:db8::7]:443\"")])
        .await
        .expect("request");
    assert_eq!(r.status, 401, "Forwarded names a client of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_broken_connections_writes_a_line_or_two_not_one_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("node.log");
    let data = dir.path().join("data");
    let args = ["node".as_ref(), "--http".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data.as_os_str()];
    let launch = Launch::test(&[("RUST_LOG", "info,openraft=off")]).log(&log);
    let node = NodeProcess::launch(BIN.as_ref(), args, "listening on ", launch).expect("node starts");
    let host = host_port(&node.url);
    for _ in 0..200 {
        let mut s = TcpStream::connect(&host).await.expect("connect");
        let _ = s.write_all(b"NOT HTTP AT ALL \x00\x01\x02\r\n\r\n").await;
        let mut buf = vec![];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    let api = Api::new(&node.url);
    let errors = api.metric("playground_http_connection_errors_total", "").await.expect("metric");
    assert!(errors >= 200.0, "every broken connection is counted: {errors}");
    let text = std::fs::read_to_string(&log).expect("log");
    let lines = text.lines().filter(|l| l.contains("a client connection failed")).count();
    assert!((1..=3).contains(&lines), "{lines} lines for 200 broken connections:\n{text}");
    assert!(!text.lines().any(|l| l.contains("ERROR")), "a client's broken connection is no error of the node's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_registrations_is_refused_past_its_bound_and_reads_go_on() {
    let env = [
        ("PLAYGROUND_MAX_PASSWORD_REQUESTS", "4"),
        ("PLAYGROUND_ARGON2_MEMORY_KIB", "8192"),
        ("PLAYGROUND_ARGON2_ITERATIONS", "2"),
    ];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("reader@example.com").await.expect("signup");
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..80 {
        let api = Api::new(&c.node.url);
        flood.spawn(async move {
            let body = serde_json::json!({"email": format!("flood-{i}@example.com"), "name": "Flood",
                                          "password": "Tr0mbone-Saddle-Quiver-88"});
            let r = api.post("/v1/users", None, &body).await.expect("register");
            (r.status, r.header("retry-after").map(str::to_owned), r.code())
        });
    }
    for _ in 0..10 {
        let me = api.get(&format!("/v1/users/{user}"), Some(&token)).await.expect("read");
        assert_eq!(me.status, 200, "reads go on during the flood: {}", me.text);
    }
    let mut refused = 0;
    while let Some(done) = flood.join_next().await {
        let (status, retry_after, code) = done.expect("task");
        match status {
            201 => {}
            503 => {
                assert_eq!(code, "unavailable");
                assert!(retry_after.is_some(), "a refused registration says when to retry");
                refused += 1;
            }
            other => panic!("a registration answered {other}"),
        }
    }
    assert!(refused > 0, "past four at once, registrations are refused");
}
