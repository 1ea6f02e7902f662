//! Requests that name entities which do not exist cost a node nothing that stays: a flood of well-formed
//! tokens of made-up sessions and of unknown order ids is answered 401 and 404, activates no entity
//! actor, leaves the live-entity gauge where it was and the node's resident memory within a bound, and a
//! real user is served all along.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use simulations::{eventually, Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");
/// Requests of each kind in the flood.
const FLOOD: usize = 20_000;
/// Requests in flight at once.
const AT_ONCE: usize = 32;
/// Resident memory the flood may add, in kB.
const RSS_GROWTH_MAX_KB: u64 = 50 * 1024;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in kB")
}

async fn metric(api: &Api, name: &str) -> f64 {
    api.metric(name, "").await.expect("metrics")
}

/// A made-up identifier shaped like the product's (26 characters of a ULID's alphabet), `n`-th of
/// series `series`.
fn made_up_id(series: &str, n: usize) -> String {
    format!("{series}{n:0>width$}", width = 26 - series.len())
}

/// Sends `count` GETs, `AT_ONCE` at a time, the `i`-th to `request(i)` = (path, token); answers how
/// many got each status (0: no answer at all).
async fn flood(
    api: &Api,
    count: usize,
    request: impl Fn(usize) -> (String, String) + Send + Sync + 'static,
) -> BTreeMap<u16, usize> {
    let request = Arc::new(request);
    let mut workers = Vec::new();
    for w in 0..AT_ONCE {
        let (api, request) = (api.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            for i in (w..count).step_by(AT_ONCE) {
                let (path, token) = request(i);
                let status = api.get(&path, Some(&token)).await.map(|r| r.status).unwrap_or(0);
                *seen.entry(status).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut seen = BTreeMap::new();
    for w in workers {
        for (status, n) in w.await.expect("a flood worker") {
            *seen.entry(status).or_insert(0) += n;
        }
    }
    seen
}

/// Forged tokens of made-up users and sessions, then unknown orders of a real user, `count` of each,
/// numbered from `from` so that no id repeats across calls.
async fn both_floods(
    api: &Api,
    from: usize,
    count: usize,
    token: &str,
) -> (BTreeMap<u16, usize>, BTreeMap<u16, usize>) {
    let forged = flood(api, count, move |i| {
        let (user, session) = (made_up_id("01J", from + i), made_up_id("01K", from + i));
        let secret = format!("{:A>43}", from + i);
        (format!("/v1/users/{user}"), format!("pg1.{user}.{session}.{secret}"))
    })
    .await;
    let token = token.to_owned();
    let orders =
        flood(api, count, move |i| (format!("/v1/orders/{}", made_up_id("01H", from + i)), token.clone())).await;
    (forged, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_entities_leaves_no_actor_and_no_memory_behind() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let pid = c.node.pid();
    let (user_id, token) = api.signup("flood@example.com").await.expect("signup");
    let me = format!("/v1/users/{user_id}");

    // A first, small round settles what any traffic allocates once (connections, worker buffers,
    // caches), so that what the flood adds is measured against a warm node.
    let (forged, orders) = both_floods(&api, 0, 1_000, &token).await;
    assert_eq!((forged.get(&401), orders.get(&404)), (Some(&1_000), Some(&1_000)), "{forged:?} {orders:?}");
    let live_before = metric(&api, "playground_actor_active").await;
    let activations_before = metric(&api, "playground_actor_activations_total").await;
    let rss_before = rss_kb(pid);

    // A real user is served throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let beside = {
        let (api, token, me, stop, served) = (api.clone(), token.clone(), me.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = api.get(&me, Some(&token)).await.expect("the real user's request");
                assert_eq!(answer.status, 200, "the real user during the flood: {}", answer.text);
                served.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (forged, orders) = both_floods(&api, 1_000, FLOOD, &token).await;
    stop.store(true, Ordering::Relaxed);
    beside.await.expect("the real user was served 200 throughout");
    assert!(served.load(Ordering::Relaxed) > 0, "the real user was served during the flood");
    assert_eq!(forged, BTreeMap::from([(401, FLOOD)]), "every forged token is refused");
    assert_eq!(orders, BTreeMap::from([(404, FLOOD)]), "every unknown order is not found");

    let activations = metric(&api, "playground_actor_activations_total").await - activations_before;
    let live_after = eventually(Duration::from_secs(10), "the live entities return to where they were", || {
        let api = api.clone();
        async move {
            let live = metric(&api, "playground_actor_active").await;
            (live <= live_before + 2.0).then_some(live)
        }
    })
    .await;
    let rss_after = rss_kb(pid);
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "flood of {FLOOD} forged tokens and {FLOOD} unknown orders: live entities {live_before} -> {live_after:?}, \
         {activations} activations, VmRSS {rss_before} kB -> {rss_after} kB (+{growth} kB)"
    );
    let live_after = live_after.expect("no actor left behind");
    assert!(activations <= 2.0, "the flood activated {activations} entity actors");
    assert!(growth <= RSS_GROWTH_MAX_KB, "resident memory grew by {growth} kB (from {rss_before} kB)");
    assert!(live_after <= live_before + 2.0);

    let after = api.get(&me, Some(&token)).await.expect("after the flood");
    assert_eq!(after.status, 200, "the real user after the flood: {}", after.text);
}
