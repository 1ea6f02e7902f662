//! The races of docs/api.md, run concurrently against a real node: one email, one idempotency key,
//! one order with two actions. Each must have exactly one winner.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;
use simulations::{Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_registrations_of_one_email_give_one_user() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    for round in 0..3 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let api = api.clone();
                // Spelled differently, equal once trimmed and lower-cased.
                let email =
                    if i % 2 == 0 { format!("race{round}@example.com") } else { format!(" RACE{round}@Example.com ") };
                tokio::spawn(async move {
                    api.post(
                        "/v1/users",
                        None,
                        &json!({"email": email, "name": "R", "password": "plum anchor velvet 42"}),
                    )
                    .await
                })
            })
            .collect();
        let mut statuses = vec![];
        for t in tasks {
            let r = t.await.expect("join").expect("post");
            if r.status == 409 {
                assert_eq!(r.code(), "email_taken");
            }
            statuses.push(r.status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "round {round}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 15, "round {round}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_repeats_of_one_idempotency_key_give_one_order() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("idem-race@example.com").await.expect("signup");
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (api, token) = (api.clone(), token.clone());
            tokio::spawn(async move { api.create_order(&token, "RACE", Some("one-key")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.expect("join").expect("create");
        assert_eq!(r.status, 201, "{}", r.text);
        ids.insert(r.field("id"));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let list = api.get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pay_and_cancel_have_one_winner() {
    let c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (_, token) = api.signup("payer@example.com").await.expect("signup");
    for _ in 0..10 {
        let id = api.create_order(&token, "X", None).await.expect("create").field("id");
        let go = |action: &'static str| {
            let (api, token, id) = (api.clone(), token.clone(), id.clone());
            // Both carry the version they read, as a careful client does.
            tokio::spawn(async move {
                api.send(
                    Method::POST,
                    &format!("/v1/orders/{id}/{action}"),
                    Some(&token),
                    None,
                    &[("if-match", "\"1\"")],
                )
                .await
            })
        };
        let (pay, cancel) = (go("pay"), go("cancel"));
        let (pay, cancel) = (pay.await.expect("join").expect("pay"), cancel.await.expect("join").expect("cancel"));
        let winners = [pay.status, cancel.status].iter().filter(|s| **s == 200).count();
        assert_eq!(winners, 1, "pay {} / cancel {}", pay.text, cancel.text);
        let loser = if pay.status == 200 { &cancel } else { &pay };
        assert!(matches!(loser.status, 409 | 412), "{}", loser.text);
        let order = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").json();
        assert_eq!(order["version"], 2);
        assert_eq!(order["history"].as_array().map(Vec::len), Some(2));
    }
}
