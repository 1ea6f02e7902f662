//! How many entity actors a node keeps: none for an entity that does not exist, and at most
//! `limits.max_entities_per_shard` per shard, evicted least recently used first and loaded back from
//! the store with their state intact. One test per file: the `playground_actor_*` metrics are
//! process-wide, and another test's entities would be counted too.

use std::time::{Duration, Instant};

use actors::metrics::{ABSENT_ANSWERS, ACTIVE, EVICTIONS};
use actors::{start_node, CallOptions, NewUser};
use cluster_config::Config;
use playground_proto::{ApiError, NewOrder, OrderAction, OrderItem, OrderStatus};

const CAP: usize = 4;

fn live() -> i64 {
    ["user", "order", "email"].iter().map(|k| ACTIVE.with_label_values(&[k]).get()).sum()
}

fn counter(c: &prometheus::IntCounterVec) -> u64 {
    ["user", "order", "email"].iter().map(|k| c.with_label_values(&[k]).get()).sum()
}

/// Waits for the live entities to come down to `at_most`: an evicted instance is counted until it has
/// finished stopping, a moment after the command that made room.
async fn settles_at_most(at_most: usize, what: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    while live() > at_most as i64 {
        assert!(Instant::now() < until, "{what}: {} entities live, more than {at_most}", live());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn order(sku: &str) -> NewOrder {
    NewOrder { items: vec![OrderItem { sku: sku.into(), quantity: 1, unit_price_cents: 100 }], currency: "EUR".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_entities_leave_no_actor_and_the_cap_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.node.data_dir = dir.path().to_owned();
    // One shard, so that every entity counts against the same cap.
    config.cluster.shards = 1;
    config.limits.max_entities_per_shard = CAP;
    config.security.argon2_memory_kib = 1024;
    config.security.argon2_iterations = 1;
    let node = start_node(&config, vec![7; 32]).await.expect("the node starts");
    let cluster = node.cluster.clone();
    let opts = CallOptions::default();

    // Made-up sessions of made-up users, and an unknown user's email: answered, and nothing stays.
    let before = counter(&ABSENT_ANSWERS);
    for i in 0..50 {
        let forged = format!("pg1.01J0MADEUPUSER{i:010}.01J0MADEUPSESSION{i:08}.{}", "x".repeat(43));
        assert_eq!(cluster.authenticate(&forged, opts).await.err(), Some(ApiError::Unauthorized));
    }
    let login = cluster.login("nobody@example.com", "whatever".into()).await;
    assert_eq!(login.err(), Some(ApiError::InvalidCredentials));
    assert_eq!(live(), 0, "no actor for an entity that does not exist");
    let answered = counter(&ABSENT_ANSWERS) - before;
    assert!(answered >= 51, "answered by the shard itself: {answered}");

    // Ten users, each with an order paid: far more entities than the cap, touched in turn.
    let mut users = Vec::new();
    for i in 0..10 {
        let email = format!("user{i}@example.com");
        let new = NewUser { email: email.clone(), name: format!("User {i}"), password: "correct horse".into() };
        let created = cluster.register(new).await.expect("register");
        settles_at_most(CAP, "after a registration").await;
        let session = cluster.login(&email, "correct horse".into()).await.expect("login");
        let who = cluster.authenticate(&session.token, opts).await.expect("the token works").0;
        let made = cluster.create_order(&who, order(&format!("SKU{i}")), Some(format!("k{i}")), opts).await;
        let made = made.expect("create");
        cluster.order_action(&who, &made.order.id, OrderAction::Pay, None, opts).await.expect("pay");
        settles_at_most(CAP, "after an order").await;
        let unknown = cluster.get_order(&who, "01J0NOSUCHORDER00000000000", opts).await;
        assert_eq!(unknown.err(), Some(ApiError::NotFound("order".into())));
        users.push((created, session.token, made.order.id));
    }
    assert!(counter(&EVICTIONS) > 0, "the cap evicted entities");

    // Every entity comes back from the store as it was left, and the cap still holds.
    for (i, (user, token, order_id)) in users.iter().enumerate() {
        let who = cluster.authenticate(token, opts).await.expect("the token still works").0;
        let again = cluster.get_user(&who, &user.id, opts).await.expect("get user");
        assert_eq!((again.email.as_str(), again.version), (user.email.as_str(), 1));
        let got = cluster.get_order(&who, order_id, opts).await.expect("get order");
        assert_eq!((got.status, got.version, got.items[0].sku.clone()), (OrderStatus::Paid, 2, format!("SKU{i}")));
        let repeat = cluster.create_order(&who, order(&format!("SKU{i}")), Some(format!("k{i}")), opts).await;
        let repeat = repeat.expect("repeat create");
        assert!(!repeat.created && repeat.order.id == *order_id, "the idempotency key still answers the first order");
        settles_at_most(CAP, "while revisiting").await;
    }
    let email = users[0].0.email.clone();
    let new = NewUser { email, name: "Again".into(), password: "correct horse".into() };
    assert_eq!(cluster.register(new).await.err(), Some(ApiError::EmailTaken), "an evicted claim still holds");
    settles_at_most(CAP, "at the end").await;
    drop(cluster);
    node.stop().await;
}
