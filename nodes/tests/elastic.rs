//! Elasticity with real processes: nodes join a running cluster under load, the placement driver moves
//! replicas and leaderships onto them until every node carries its share, and no request fails and no
//! acknowledged write is lost on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use simulations::{eventually, Api, ProcessCluster, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_playground");
const SHARDS: usize = 16;

/// What the load saw: acknowledged order ids, and every request that failed (5xx or no answer).
#[derive(Default)]
struct Load {
    acked: Vec<String>,
    failed: Vec<String>,
    requests: usize,
}

/// Creates (each with its own idempotency key, retried on an unknown outcome) and reads orders through
/// `api` until `stop`.
async fn load(api: Api, token: String, stop: Arc<AtomicBool>) -> Load {
    let mut out = Load::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k-{n}");
        n += 1;
        out.requests += 1;
        match api.create_order(&token, &key, Some(&key)).await {
            Ok(r) if r.status == 201 || r.status == 200 => out.acked.push(r.field("id")),
            Ok(r) => out.failed.push(format!("create {key}: {} {}", r.status, r.text)),
            Err(e) => out.failed.push(format!("create {key}: {e:#}")),
        }
        if let Some(id) = out.acked.last().cloned() {
            out.requests += 1;
            match api.get(&format!("/v1/orders/{id}"), Some(&token)).await {
                Ok(r) if r.status == 200 => {}
                Ok(r) => out.failed.push(format!("read {id}: {} {}", r.status, r.text)),
                Err(e) => out.failed.push(format!("read {id}: {e:#}")),
            }
        }
    }
    out
}

/// Members, each shard's replicas and leader, from `GET /v1/cluster`.
struct View {
    members: Vec<String>,
    replicas: Vec<Vec<String>>,
    leaders: Vec<Option<String>>,
}

async fn view(api: &Api) -> Option<View> {
    let v = api.get("/v1/cluster", Some(ADMIN_TOKEN)).await.ok()?.json();
    let names = |a: &Value| -> Vec<String> {
        a.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let members = v["members"].as_array()?.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
    let shards = v["shards"].as_array()?;
    Some(View {
        members,
        replicas: shards.iter().map(|s| names(&s["replicas"])).collect(),
        leaders: shards.iter().map(|s| s["leader"].as_str().map(str::to_owned)).collect(),
    })
}

fn counts(lists: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for n in lists {
        *by.entry(n).or_default() += 1;
    }
    by
}

/// Every member holds `shards * 3 / n` replicas (±1), every shard three distinct ones, and every member
/// leads `shards / n` shards (±1).
fn even(v: &View, n: usize) -> bool {
    let spread = |by: &BTreeMap<String, usize>| {
        v.members
            .iter()
            .map(|m| by.get(m).copied().unwrap_or(0))
            .fold((usize::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)))
    };
    let (lo, hi) = spread(&counts(v.replicas.iter().flatten().cloned()));
    let (llo, lhi) = spread(&counts(v.leaders.iter().flatten().cloned()));
    v.members.len() == n
        && v.replicas.len() == SHARDS
        && v.replicas.iter().all(|r| r.iter().collect::<BTreeSet<_>>().len() == 3)
        && v.leaders.iter().all(Option::is_some)
        && hi - lo <= 1
        && lhi - llo <= 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_three_to_five_nodes_under_load_evens_out_and_loses_nothing() {
    let mut c = ProcessCluster::start(BIN.as_ref(), 3, 1, SHARDS as u32, &[]).await.expect("a cluster starts");
    let g = c.gateway(0);
    let (_, token) = g.signup("grow@example.com").await.expect("signup");
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(g.clone(), token.clone(), stop.clone()));

    let fourth = c.add_node().expect("node-4 starts");
    let fifth = c.add_node().expect("node-5 starts");
    for i in [fourth, fifth] {
        c.node(i).wait_ready(Duration::from_secs(30)).await.expect("the new node joins");
    }
    let balanced = eventually(Duration::from_secs(120), "an even placement over five nodes", || async {
        let v = view(&g).await?;
        even(&v, 5).then_some(v)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let load = running.await.expect("the load ran");
    let v = match balanced {
        Ok(v) => v,
        Err(e) => {
            let now = view(&g).await;
            let detail =
                now.map(|v| format!("members {:?}, replicas {:?}, leaders {:?}", v.members, v.replicas, v.leaders));
            panic!("{e:#}: {detail:?}");
        }
    };
    assert_eq!(v.members, (1..=5).map(|i| format!("node-{i}")).collect::<Vec<_>>());
    for new in ["node-4", "node-5"] {
        assert!(v.replicas.iter().flatten().any(|r| r == new), "{new} holds replicas");
        assert!(v.leaders.iter().flatten().any(|l| l == new), "{new} leads shards");
    }
    assert!(load.acked.len() > 10, "the load ran throughout: {} acknowledged", load.acked.len());
    assert!(load.failed.is_empty(), "{} of {} requests failed: {:?}", load.failed.len(), load.requests, load.failed);

    // Every acknowledged order is there, read through the gateway and straight from a new node.
    for api in [g.clone(), c.node(fifth)] {
        for id in &load.acked {
            let r = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("read");
            assert_eq!(r.status, 200, "order {id}: {}", r.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_by_admin_call_and_by_sigterm_hands_everything_over_and_loses_nothing() {
    let mut c = ProcessCluster::start(BIN.as_ref(), 5, 1, SHARDS as u32, &[]).await.expect("a cluster starts");
    let g = c.gateway(0);
    let (_, token) = g.signup("drain@example.com").await.expect("signup");
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(g.clone(), token.clone(), stop.clone()));
    eventually(Duration::from_secs(60), "an even placement over five nodes", || async {
        even(&view(&g).await?, 5).then_some(())
    })
    .await
    .expect("balanced from the start");

    // The admin call, through the command line.
    let out = std::process::Command::new(BIN)
        .args(["admin", "drain", "node-5", "--url", g.base(), "--token", ADMIN_TOKEN])
        .output()
        .expect("playground admin drain runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node-5 is draining"));
    let fifth = c.node(4);
    eventually(Duration::from_secs(10), "node-5 says it is not ready", || async {
        (fifth.get("/readyz", None).await.ok()?.status == 503).then_some(())
    })
    .await
    .expect("a draining or drained node is not ready");
    let v = eventually(Duration::from_secs(120), "node-5 drained, the rest even", || async {
        let v = view(&g).await?;
        even(&v, 4).then_some(v)
    })
    .await
    .expect("drained");
    assert!(!v.members.contains(&"node-5".to_owned()) && v.replicas.iter().flatten().all(|r| r != "node-5"));

    // SIGTERM drains node-4 (a replica of the metadata group) before it exits.
    c.terminate(3, Duration::from_secs(100)).expect("node-4 drains and exits");
    let fourth_left = eventually(Duration::from_secs(10), "node-4 is no member", || async {
        let v = view(&g).await?;
        (!v.members.contains(&"node-4".to_owned())).then_some(())
    })
    .await;
    fourth_left.expect("node-4 left the members before it exited");
    eventually(Duration::from_secs(60), "the last three even", || async { even(&view(&g).await?, 3).then_some(()) })
        .await
        .expect("three left");

    // Three members cannot hold three replicas of every shard without one of them.
    let refused = g.send(reqwest::Method::POST, "/v1/cluster/members/node-1/drain", Some(ADMIN_TOKEN), None, &[]).await;
    let refused = refused.expect("drain call");
    assert_eq!((refused.status, refused.code().as_str()), (409, "cannot_drain"), "{}", refused.text);
    let unknown = g.send(reqwest::Method::POST, "/v1/cluster/members/node-9/drain", Some(ADMIN_TOKEN), None, &[]).await;
    assert_eq!(unknown.expect("drain call").status, 404);

    stop.store(true, Ordering::SeqCst);
    let load = running.await.expect("the load ran");
    assert!(load.acked.len() > 10, "the load ran throughout: {} acknowledged", load.acked.len());
    assert!(load.failed.is_empty(), "{} of {} requests failed: {:?}", load.failed.len(), load.requests, load.failed);
    for id in &load.acked {
        let r = g.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("read");
        assert_eq!(r.status, 200, "order {id}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_for_good_is_replaced_and_comes_back_empty_without_harm() {
    let env = [("PLAYGROUND_DEAD_MEMBER_TIMEOUT", "5s")];
    let mut c = ProcessCluster::start(BIN.as_ref(), 4, 1, SHARDS as u32, &env).await.expect("a cluster starts");
    let g = c.gateway(0);
    let (_, token) = g.signup("loss@example.com").await.expect("signup");
    eventually(Duration::from_secs(60), "an even placement over four nodes", || async {
        even(&view(&g).await?, 4).then_some(())
    })
    .await
    .expect("balanced from the start");
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(g.clone(), token.clone(), stop.clone()));

    c.kill9(3).expect("node-4 killed");
    let v = eventually(Duration::from_secs(120), "node-4 removed and three replicas of every shard again", || async {
        let v = view(&g).await?;
        even(&v, 3).then_some(v)
    })
    .await
    .expect("replication factor restored");
    assert!(v.replicas.iter().flatten().all(|r| r != "node-4"));

    // It comes back on its old data: it erases what it held and joins as a new, empty member.
    c.restart(3).expect("node-4 restarts");
    eventually(Duration::from_secs(120), "node-4 back, and the four even again", || async {
        even(&view(&g).await?, 4).then_some(())
    })
    .await
    .expect("rebalanced over four");
    stop.store(true, Ordering::SeqCst);
    let load = running.await.expect("the load ran");
    assert!(load.acked.len() > 10, "the load ran throughout: {} acknowledged", load.acked.len());
    // A kill -9 may fail the requests in flight on that node; nothing acknowledged may be lost.
    for failure in &load.failed {
        assert!(
            failure.contains(" 503 ") || failure.contains(" 504 "),
            "only unavailable or unknown outcomes: {failure}"
        );
    }
    for api in [g.clone(), c.node(3)] {
        for id in &load.acked {
            let r = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("read");
            assert_eq!(r.status, 200, "order {id}: {}", r.text);
        }
    }
}
