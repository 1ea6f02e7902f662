//! Supervision and the entity life cycle: an entity made to panic is restarted with its stored state and
//! loses nothing acknowledged; idle entities are passivated and come back on their next message.

use std::time::Duration;

use reqwest::Method;
use simulations::{eventually, Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_entity_is_restarted_and_loses_nothing() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_PANIC_INJECTION", "true")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("panic@example.com").await.expect("signup");
    let id = api.create_order(&token, "P", None).await.expect("create").field("id");
    let paid = api.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[]).await.expect("pay");
    assert_eq!(paid.status, 200);
    let before = api.metric("playground_actor_restarts_total", "kind=\"order\"").await.expect("metric");

    let hit = api
        .send(Method::POST, &format!("/v1/orders/{id}/ship"), Some(&token), None, &[("x-fault-inject", "panic")])
        .await
        .expect("ship");
    assert_eq!(
        (hit.status, hit.code().as_str()),
        (504, "timeout"),
        "the outcome of a write that died in flight is unknown: {}",
        hit.text
    );
    eventually(Duration::from_secs(10), "the order entity is restarted", || async {
        let now = api.metric("playground_actor_restarts_total", "kind=\"order\"").await.ok()?;
        (now > before).then_some(())
    })
    .await
    .expect("restart counted");

    let order = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").json();
    assert_eq!(order["status"], "paid", "the acknowledged payment survived the panic");
    assert_eq!(order["version"], 2);
    let shipped =
        api.send(Method::POST, &format!("/v1/orders/{id}/ship"), Some(&token), None, &[]).await.expect("ship");
    assert_eq!(shipped.status, 200, "{}", shipped.text);

    let read = api
        .send(Method::GET, &format!("/v1/users/{user}"), Some(&token), None, &[("x-fault-inject", "panic")])
        .await
        .expect("get");
    assert_eq!(read.status, 503, "a read that met a panic is retried once, then unavailable: {}", read.text);
    assert_eq!(read.header("retry-after"), Some("1"));
    assert_eq!(api.get(&format!("/v1/users/{user}"), Some(&token)).await.expect("get").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_injection_is_off_by_default() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (_, token) = api.signup("nopanic@example.com").await.expect("signup");
    let id = api.create_order(&token, "P", None).await.expect("create").field("id");
    let paid = api
        .send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[("x-fault-inject", "panic")])
        .await
        .expect("pay");
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(api.metric("playground_actor_restarts_total", "").await.expect("metric"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_entities_are_passivated_and_reactivated() {
    let c = TestCluster::start(BIN.as_ref(), &[("PLAYGROUND_ENTITY_IDLE_TIMEOUT", "200ms")]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (_, token) = api.signup("idle@example.com").await.expect("signup");
    let id = api.create_order(&token, "I", None).await.expect("create").field("id");
    assert_eq!(api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").status, 200);
    let activations = api.metric("playground_actor_activations_total", "kind=\"order\"").await.expect("metric");
    eventually(Duration::from_secs(10), "the order entity is passivated", || async {
        let p = api.metric("playground_actor_passivations_total", "kind=\"order\"").await.ok()?;
        let active = api.metric("playground_actor_active", "kind=\"order\"").await.ok()?;
        (p >= 1.0 && active == 0.0).then_some(())
    })
    .await
    .expect("passivation");
    let again = api.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[]).await.expect("pay");
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["version"], 2, "state reloaded from the store");
    let after = api.metric("playground_actor_activations_total", "kind=\"order\"").await.expect("metric");
    assert!(after > activations, "reactivated on its next message");
}
