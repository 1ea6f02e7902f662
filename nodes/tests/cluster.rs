//! The replicated cluster as users see it: 3 nodes and 2 gateways as separate processes on loopback.
//! Requests go through both gateways; nodes are killed, frozen and restarted; nothing acknowledged is
//! lost, and each race still has one winner.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use simulations::{eventually, Api, ProcessCluster, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_playground");
const SHARDS: u32 = 16;

async fn cluster() -> ProcessCluster {
    ProcessCluster::start(BIN.as_ref(), 3, 2, SHARDS, &[]).await.expect("a 3-node cluster starts")
}

/// A cluster whose groups all heartbeat all the time (`cluster.quiet_groups = false`).
async fn awake_cluster() -> ProcessCluster {
    let env = [("PLAYGROUND_QUIET_GROUPS", "false")];
    ProcessCluster::start(BIN.as_ref(), 3, 2, SHARDS, &env).await.expect("a 3-node cluster starts")
}

/// The node that leads the most shards, by the cluster view.
async fn busiest_leader(api: &Api) -> usize {
    let view = api.get("/v1/cluster", Some(ADMIN_TOKEN)).await.expect("view").json();
    let mut counts = [0usize; 3];
    for s in view["shards"].as_array().expect("shards") {
        if let Some(n) =
            s["leader"].as_str().and_then(|l| l.strip_prefix("node-")).and_then(|i| i.parse::<usize>().ok())
        {
            counts[n - 1] += 1;
        }
    }
    (0..3).max_by_key(|i| counts[*i]).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_works_through_both_gateways() {
    let c = cluster().await;
    let (g1, g2) = (c.gateway(0), c.gateway(1));
    let id = g1.register("both@example.com", "correct horse battery").await.expect("register via gateway 1");
    let dup = g2
        .post(
            "/v1/users",
            None,
            &json!({"email": "BOTH@example.com", "name": "D", "password": "plum anchor velvet 42"}),
        )
        .await
        .expect("post");
    assert_eq!((dup.status, dup.code().as_str()), (409, "email_taken"));
    let token = g2.login("both@example.com", "correct horse battery").await.expect("login via gateway 2");
    let order = g1.create_order(&token, "A", Some("k1")).await.expect("create");
    assert_eq!(order.status, 201, "{}", order.text);
    let oid = order.field("id");
    let paid = g2.send(Method::POST, &format!("/v1/orders/{oid}/pay"), Some(&token), None, &[]).await.expect("pay");
    assert_eq!(paid.status, 200, "{}", paid.text);
    let seen = g1.get(&format!("/v1/orders/{oid}"), Some(&token)).await.expect("get");
    assert_eq!(seen.json()["status"], "paid", "a write through one gateway is read through the other");
    let list = g2.get(&format!("/v1/users/{id}/orders"), Some(&token)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(g1.delete("/v1/sessions/current", Some(&token)).await.expect("logout").status, 204);
    assert_eq!(
        g2.get("/v1/sessions/current", Some(&token)).await.expect("current").status,
        401,
        "revoked everywhere at once"
    );

    let view = g1.get("/v1/cluster", Some(ADMIN_TOKEN)).await.expect("view").json();
    let members: Vec<(&str, &str)> = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_str().unwrap_or(""), m["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(members, vec![("node-1", "up"), ("node-2", "up"), ("node-3", "up")]);
    let shards = view["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), SHARDS as usize);
    for s in shards {
        assert_eq!(s["replicas"].as_array().map(Vec::len), Some(3), "{s}");
        assert!(s["leader"].is_string() && s["term"].as_u64() >= Some(1), "{s}");
    }
    let leaders: HashSet<&str> = shards.iter().filter_map(|s| s["leader"].as_str()).collect();
    assert_eq!(leaders.len(), 3, "leaders are spread over every node: {leaders:?}");

    // Members and placement come from the metadata group's record, bootstrapped from the seeds.
    assert!(view["meta_version"].as_u64() >= Some(1), "a metadata record is known: {}", view["meta_version"]);
    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    for s in shards {
        let shard = s["shard"].as_u64().expect("shard") as u32;
        let replicas: Vec<&str> =
            s["replicas"].as_array().expect("replicas").iter().filter_map(|r| r.as_str()).collect();
        assert_eq!(
            replicas,
            playground_proto::placement(shard, &names, 3),
            "shard {shard} is placed as the record says"
        );
        assert_eq!(replicas.iter().collect::<HashSet<_>>().len(), 3, "three distinct nodes: {replicas:?}");
    }
    let other = g2.get("/v1/cluster", Some(ADMIN_TOKEN)).await.expect("view").json();
    assert_eq!(other["meta_version"], view["meta_version"], "both gateways read the same record");

    // Left alone, every group goes quiet on every node (its 16 shards and the metadata group), and the
    // next request wakes its shard.
    for i in 0..3 {
        let node = c.node(i);
        eventually(Duration::from_secs(30), &format!("node-{} quiet", i + 1), || {
            let node = node.clone();
            async move {
                let text = node.get("/metrics", None).await.ok()?.text;
                let quiet = metric(&text, "playground_raft_quiet_groups")?;
                (quiet == f64::from(SHARDS + 1)).then_some(())
            }
        })
        .await
        .expect("an idle cluster goes quiet");
    }
    let token = g1.login("both@example.com", "correct horse battery").await.expect("login after the quiet");
    let seen = g2.get(&format!("/v1/orders/{oid}"), Some(&token)).await.expect("get after the quiet");
    assert_eq!((seen.status, seen.json()["status"].as_str()), (200, Some("paid")), "{}", seen.text);
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_over_both_gateways_have_one_winner() {
    // The one test here whose groups never go quiet: the switch's other setting serves alike.
    let c = awake_cluster().await;
    let gateways = [c.gateway(0), c.gateway(1)];
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let api = gateways[i % 2].clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/users",
                    None,
                    &json!({"email": "race@example.com", "name": "R", "password": "plum anchor velvet 42"}),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let r = t.await.expect("join").expect("post");
        assert!(matches!(r.status, 201 | 409), "{}", r.text);
        created += usize::from(r.status == 201);
    }
    assert_eq!(created, 1);

    let (user, token) = gateways[0].signup("idem@example.com").await.expect("signup");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (api, token) = (gateways[i % 2].clone(), token.clone());
            tokio::spawn(async move { api.create_order(&token, "R", Some("same-key")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.expect("join").expect("create");
        assert_eq!(r.status, 201, "{}", r.text);
        ids.insert(r.field("id"));
    }
    assert_eq!(ids.len(), 1);
    let list = gateways[1].get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
}

/// Writes through both gateways until told to stop; returns every acknowledged order per user.
fn writers(
    gateways: [Api; 2],
    users: Vec<(String, String)>,
    stop: Arc<Mutex<bool>>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    users
        .into_iter()
        .enumerate()
        .map(|(u, (_, token))| {
            let (api, stop) = (gateways[u % 2].clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = vec![];
                for i in 0..100_000 {
                    if *stop.lock().expect("lock") {
                        break;
                    }
                    if let Ok(r) = api.create_order(&token, &format!("W{u}-{i}"), Some(&format!("w-{i}"))).await {
                        if r.status == 201 {
                            acked.push(r.field("id"));
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

async fn all_listed(api: &Api, user: &str, token: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{user}/orders?limit=100&cursor={c}"),
            None => format!("/v1/users/{user}/orders?limit=100"),
        };
        let answer = api.get(&path, Some(token)).await.expect("list");
        assert_eq!(answer.status, 200, "listing {user}'s orders: {}", answer.text);
        let page = answer.json();
        seen.extend(
            page["items"].as_array().expect("items").iter().filter_map(|o| o["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_loses_no_acknowledged_write() {
    let mut c = cluster().await;
    let gateways = [c.gateway(0), c.gateway(1)];
    let mut users = vec![];
    for i in 0..6 {
        users.push(gateways[i % 2].signup(&format!("load{i}@example.com")).await.expect("signup"));
    }
    let stop = Arc::new(Mutex::new(false));
    let tasks = writers(gateways.clone(), users.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = busiest_leader(&gateways[0]).await;
    c.kill9(victim).expect("kill -9");
    let killed_at = Instant::now();
    // Writes resume: a fresh order succeeds within the liveness bound.
    let probe_user = users[0].1.clone();
    let recovered = eventually(Duration::from_secs(10), "writes succeed after the kill", || async {
        let r = gateways[1].create_order(&probe_user, "PROBE", None).await.ok()?;
        (r.status == 201).then(|| killed_at.elapsed())
    })
    .await
    .expect("writes resume");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    *stop.lock().expect("lock") = true;
    let mut acked = vec![];
    for t in tasks {
        acked.push(t.await.expect("join"));
    }
    assert!(
        acked.iter().map(Vec::len).sum::<usize>() > 20,
        "the load ran: {:?}",
        acked.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for (u, (user, token)) in users.iter().enumerate() {
        let listed = all_listed(&gateways[u % 2], user, token).await;
        for id in &acked[u] {
            assert!(listed.contains(id), "acknowledged order {id} of user {u} is lost");
        }
    }
    eprintln!("writes resumed {recovered:?} after kill -9 of node-{}", victim + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_detected_fails_over_and_serves_nothing_stale() {
    let mut c = cluster().await;
    let g = c.gateway(0);
    let (_, token) = g.signup("frozen@example.com").await.expect("signup");
    let mut orders = vec![];
    for i in 0..8 {
        orders.push(g.create_order(&token, &format!("F{i}"), None).await.expect("create").field("id"));
    }
    let victim = busiest_leader(&g).await;
    let victim_api = c.node(victim);
    c.freeze(victim).expect("SIGSTOP");
    let frozen_at = Instant::now();
    let name = format!("node-{}", victim + 1);
    eventually(Duration::from_secs(5), "the frozen node is marked down", || async {
        let view = g.get("/v1/cluster", Some(ADMIN_TOKEN)).await.ok()?.json();
        view["members"].as_array()?.iter().any(|m| m["id"] == name.as_str() && m["state"] == "down").then_some(())
    })
    .await
    .expect("detection");
    // Every order can be paid while the node is frozen: its shards failed over.
    for id in &orders {
        let paid = eventually(Duration::from_secs(10), "pay during the freeze", || async {
            let r = g.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[]).await.ok()?;
            (r.status == 200).then_some(r)
        })
        .await
        .expect("failover");
        assert_eq!(paid.json()["status"], "paid");
    }
    // The node stays frozen for 10 s while the cluster keeps taking writes.
    let mut during = 0;
    while frozen_at.elapsed() < Duration::from_secs(10) {
        let r = g.create_order(&token, "DURING", None).await.expect("create");
        assert_eq!(r.status, 201, "writes keep succeeding while a node is frozen: {}", r.text);
        during += 1;
    }
    assert!(during > 0);
    c.thaw(victim).expect("SIGCONT");
    // Straight after the thaw the old leader answers only what is current, or nothing.
    for id in &orders {
        if let Ok(r) = victim_api.get(&format!("/v1/orders/{id}"), Some(&token)).await {
            if r.status == 200 {
                assert_eq!(r.json()["status"], "paid", "a deposed leader served a stale order");
            }
        }
    }
    let r = victim_api
        .send(Method::POST, &format!("/v1/orders/{}/pay", orders[0]), Some(&token), None, &[])
        .await
        .expect("pay");
    assert_ne!(r.status, 200, "the paid order cannot be paid again through the old leader: {}", r.text);
    c.wait_ready(Duration::from_secs(20)).await.expect("the cluster is whole again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_and_serves_as_a_replica() {
    let mut c = cluster().await;
    let g = c.gateway(0);
    let (user, token) = g.signup("catchup@example.com").await.expect("signup");
    c.kill9(2).expect("kill node-3");
    let mut written = vec![];
    for i in 0..20 {
        let r = eventually(Duration::from_secs(10), "create while node-3 is down", || async {
            let r = g.create_order(&token, &format!("C{i}"), Some(&format!("c-{i}"))).await.ok()?;
            (r.status == 201).then_some(r)
        })
        .await
        .expect("writes with two of three nodes");
        written.push(r.field("id"));
    }
    c.restart(2).expect("restart node-3");
    c.wait_ready(Duration::from_secs(30)).await.expect("ready");
    // Give node-3 its catch-up time, then take away another node: node-3's copy must now serve.
    eventually(Duration::from_secs(20), "node-3 caught up", || async {
        let view = g.get("/v1/cluster", Some(ADMIN_TOKEN)).await.ok()?.json();
        view["members"].as_array()?.iter().all(|m| m["state"] == "up").then_some(())
    })
    .await
    .expect("all up");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.kill9(0).expect("kill node-1");
    let listed = eventually(Duration::from_secs(15), "reads with node-3 and node-2", || async {
        let r = g.get(&format!("/v1/users/{user}/orders?limit=100"), Some(&token)).await.ok()?;
        (r.status == 200).then(|| r.json())
    })
    .await
    .expect("reads after the second kill");
    let ids: HashSet<&str> =
        listed["items"].as_array().expect("items").iter().filter_map(|o| o["id"].as_str()).collect();
    for id in &written {
        assert!(ids.contains(id.as_str()), "order {id} written while node-3 was down is missing");
    }
}
