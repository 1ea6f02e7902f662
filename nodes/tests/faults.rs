//! Network faults injected by the fault proxy on every link of a real cluster: an isolated node, an
//! asymmetric partition, latency everywhere. The cluster keeps serving within the liveness bound, a cut
//! off node serves nothing stale, and everything converges after healing.

use std::time::Duration;

use reqwest::Method;
use simulations::{eventually, Api, Direction, ProcessCluster, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

async fn proxied() -> ProcessCluster {
    ProcessCluster::start_proxied(BIN.as_ref(), 3, 1, 8, &[]).await.expect("a proxied cluster starts")
}

async fn busiest_leader(api: &Api) -> String {
    let view = api.get("/v1/cluster", Some(ADMIN_TOKEN)).await.expect("view").json();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for s in view["shards"].as_array().expect("shards") {
        if let Some(l) = s["leader"].as_str() {
            *counts.entry(l.to_owned()).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(n, _)| n).expect("a leader")
}

async fn pay_within(api: &Api, token: &str, id: &str, within: Duration) {
    eventually(within, "pay", || async {
        let r = api.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(token), None, &[]).await.ok()?;
        (r.status == 200 || r.code() == "invalid_transition").then_some(())
    })
    .await
    .expect("the write succeeds within the liveness bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_serves_nothing_stale_and_catches_up_after_healing() {
    let c = proxied().await;
    let g = c.gateway(0);
    let (_, token) = g.signup("isolated@example.com").await.expect("signup");
    let mut orders = vec![];
    for i in 0..6 {
        orders.push(g.create_order(&token, &format!("I{i}"), None).await.expect("create").field("id"));
    }
    let victim = busiest_leader(&g).await;
    let index: usize = victim.trim_start_matches("node-").parse::<usize>().expect("node name") - 1;
    let victim_api = c.node(index);
    c.isolate(&victim);
    for id in &orders {
        pay_within(&g, &token, id, Duration::from_secs(10)).await;
    }
    // The cut-off node cannot confirm leadership, so it answers nothing it cannot vouch for.
    for id in &orders {
        if let Ok(r) = victim_api.get(&format!("/v1/orders/{id}"), Some(&token)).await {
            if r.status == 200 {
                assert_eq!(r.json()["status"], "paid", "an isolated node served a stale order");
            }
        }
    }
    c.heal();
    c.wait_ready(Duration::from_secs(20)).await.expect("ready after healing");
    for id in &orders {
        let r = eventually(Duration::from_secs(10), "the healed node serves current data", || async {
            let r = victim_api.get(&format!("/v1/orders/{id}"), Some(&token)).await.ok()?;
            (r.status == 200).then_some(r)
        })
        .await
        .expect("read through the healed node");
        assert_eq!(r.json()["status"], "paid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_partition_keeps_the_cluster_serving() {
    let c = proxied().await;
    let g = c.gateway(0);
    let (_, token) = g.signup("asym@example.com").await.expect("signup");
    let id = g.create_order(&token, "A", None).await.expect("create").field("id");
    let victim = busiest_leader(&g).await;
    // Everything the victim sends is lost; what it is sent still arrives.
    for (from, to, proxy) in &c.links {
        if *from == victim {
            proxy.blackhole(Some(Direction::Forward));
        } else if *to == victim {
            proxy.blackhole(Some(Direction::Backward));
        }
    }
    pay_within(&g, &token, &id, Duration::from_secs(10)).await;
    let fresh = eventually(Duration::from_secs(10), "new writes", || async {
        let r = g.create_order(&token, "B", None).await.ok()?;
        (r.status == 201).then_some(r)
    })
    .await
    .expect("writes during the partition");
    c.heal();
    c.wait_ready(Duration::from_secs(20)).await.expect("ready after healing");
    let r = g.get(&format!("/v1/orders/{}", fresh.field("id")), Some(&token)).await.expect("get");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_every_link_slows_but_breaks_nothing() {
    let c = proxied().await;
    for (_, _, proxy) in &c.links {
        proxy.delay(Duration::from_millis(15), Duration::from_millis(10));
    }
    let g = c.gateway(0);
    let (user, token) = g.signup("slow@example.com").await.expect("signup under latency");
    let id = g.create_order(&token, "S", Some("slow-1")).await.expect("create").field("id");
    pay_within(&g, &token, &id, Duration::from_secs(10)).await;
    let again = g.create_order(&token, "S", Some("slow-1")).await.expect("repeat");
    assert_eq!(again.field("id"), id, "idempotency holds under latency");
    let list = g.get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
}
