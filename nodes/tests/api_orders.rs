//! Orders through the public HTTP API: validation, ownership, transitions, idempotency, paging.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;
use simulations::{Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn start() -> (TestCluster, Api) {
    let cluster = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&cluster.node.url);
    (cluster, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_validate_and_belong_to_their_owner() {
    let (_c, api) = start();
    let (_, token) = api.signup("buyer@example.com").await.expect("signup");
    let (_, other) = api.signup("stranger@example.com").await.expect("signup");
    let body = json!({"items": [{"sku": "A-1", "quantity": 2, "unit_price_cents": 150}, {"sku": "b.2", "quantity": 1, "unit_price_cents": 0}]});
    let r = api.post("/v1/orders", Some(&token), &body).await.expect("create");
    assert_eq!(r.status, 201, "{}", r.text);
    let order = r.json();
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(r.header("location"), Some(format!("/v1/orders/{id}").as_str()));
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(order["total_cents"], 300);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["status"], "pending");
    assert_eq!(order["history"], json!([{"status": "pending", "at": order["created_at"]}]));

    let usd = api
        .post(
            "/v1/orders",
            Some(&token),
            &json!({"items": [{"sku": "A", "quantity": 1, "unit_price_cents": 1}], "currency": "USD"}),
        )
        .await
        .expect("create");
    assert_eq!(usd.json()["currency"], "USD");

    let invalid = api
        .post(
            "/v1/orders",
            Some(&token),
            &json!({"items": [{"sku": "bad sku!", "quantity": 0, "unit_price_cents": 100000001}], "currency": "usd"}),
        )
        .await
        .expect("create");
    assert_eq!((invalid.status, invalid.code().as_str()), (422, "validation_failed"));
    let failing: Vec<String> = invalid.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(failing, vec!["items[0].sku", "items[0].quantity", "items[0].unit_price_cents", "currency"]);
    let empty = api.post("/v1/orders", Some(&token), &json!({"items": []})).await.expect("create");
    assert_eq!(empty.status, 422);
    for q in [json!(1.5), json!("2")] {
        let r = api
            .post("/v1/orders", Some(&token), &json!({"items": [{"sku": "A", "quantity": q, "unit_price_cents": 1}]}))
            .await
            .expect("create");
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "quantity {q}");
    }
    assert_eq!(api.post("/v1/orders", None, &body).await.expect("create").status, 401);

    let mine = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get");
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json(), order);
    let theirs = api.get(&format!("/v1/orders/{id}"), Some(&other)).await.expect("get");
    assert_eq!((theirs.status, theirs.code().as_str()), (404, "not_found"), "someone else's order is not found");
    assert_eq!(api.get("/v1/orders/01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(&token)).await.expect("get").status, 404);
    assert_eq!(
        api.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&other), None, &[]).await.expect("pay").status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_move_only_along_legal_transitions() {
    let (_c, api) = start();
    let (_, token) = api.signup("mover@example.com").await.expect("signup");
    let act = |id: String, action: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let api = api.clone();
        let token = token.clone();
        async move {
            api.send(Method::POST, &format!("/v1/orders/{id}/{action}"), Some(&token), None, &headers)
                .await
                .expect("action")
        }
    };
    let id = api.create_order(&token, "A", None).await.expect("create").field("id");
    let stale = act(id.clone(), "pay", vec![("if-match", "\"7\"")]).await;
    assert_eq!((stale.status, stale.code().as_str()), (412, "precondition_failed"));
    let paid = act(id.clone(), "pay", vec![("if-match", "\"1\"")]).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(paid.json()["status"], "paid");
    assert_eq!(paid.header("etag"), Some("\"2\""));
    for (action, to) in [("ship", "shipped"), ("deliver", "delivered")] {
        let r = act(id.clone(), action, vec![]).await;
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        assert_eq!(r.json()["status"], to);
    }
    for action in ["pay", "ship", "deliver", "cancel"] {
        let r = act(id.clone(), action, vec![]).await;
        assert_eq!((r.status, r.code().as_str()), (409, "invalid_transition"), "{action} from delivered");
        assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("delivered")), "{}", r.text);
    }
    let done = api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").json();
    let statuses: Vec<&str> =
        done["history"].as_array().expect("history").iter().filter_map(|h| h["status"].as_str()).collect();
    assert_eq!(statuses, vec!["pending", "paid", "shipped", "delivered"]);
    assert_eq!(done["version"], 4);

    let second = api.create_order(&token, "B", None).await.expect("create").field("id");
    assert_eq!(act(second.clone(), "ship", vec![]).await.status, 409, "pending cannot ship");
    assert_eq!(act(second.clone(), "cancel", vec![]).await.json()["status"], "cancelled");
    assert_eq!(act(second.clone(), "pay", vec![]).await.status, 409, "cancelled is final");
    let third = api.create_order(&token, "C", None).await.expect("create").field("id");
    assert_eq!(act(third.clone(), "pay", vec![]).await.status, 200);
    assert_eq!(act(third.clone(), "cancel", vec![]).await.json()["status"], "cancelled", "paid can be cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_per_user() {
    let (_c, api) = start();
    let (user, token) = api.signup("idem@example.com").await.expect("signup");
    let (_, other) = api.signup("idem2@example.com").await.expect("signup");
    let first = api.create_order(&token, "A", Some("key-1")).await.expect("create");
    assert_eq!(first.status, 201);
    let id = first.field("id");
    let paid = api.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[]).await.expect("pay");
    assert_eq!(paid.status, 200);
    let again = api.create_order(&token, "A", Some("key-1")).await.expect("repeat");
    assert_eq!(again.status, 201);
    assert_eq!(again.field("id"), id);
    assert_eq!(again.json()["status"], "paid", "the order as it is now");
    let changed = api.create_order(&token, "DIFFERENT", Some("key-1")).await.expect("reuse");
    assert_eq!((changed.status, changed.code().as_str()), (422, "idempotency_key_reused"));
    let theirs = api.create_order(&other, "A", Some("key-1")).await.expect("other user");
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.field("id"), id, "keys are scoped per user");
    let bad = api.create_order(&token, "A", Some("has space")).await.expect("bad key");
    assert_eq!((bad.status, bad.code().as_str()), (400, "bad_request"));
    let list = api.get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("list");
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_order_once_newest_first() {
    let (_c, api) = start();
    let (user, token) = api.signup("pager@example.com").await.expect("signup");
    let (other_user, other) = api.signup("pager2@example.com").await.expect("signup");
    let mut created = vec![];
    for i in 0..25 {
        created.push(api.create_order(&token, &format!("SKU-{i}"), None).await.expect("create").field("id"));
    }
    api.create_order(&other, "NOT-MINE", None).await.expect("create");
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{user}/orders?limit=10&cursor={c}"),
            None => format!("/v1/users/{user}/orders?limit=10"),
        };
        let page = api.get(&path, Some(&token)).await.expect("page");
        assert_eq!(page.status, 200, "{}", page.text);
        let body = page.json();
        seen.extend(
            body["items"].as_array().expect("items").iter().map(|o| o["id"].as_str().unwrap_or_default().to_owned()),
        );
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(body["next_cursor"].is_null());
                break;
            }
        }
        assert!(pages < 10, "paging terminates");
    }
    assert_eq!(pages, 3);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    let default = api.get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("page");
    assert_eq!(default.json()["items"].as_array().map(Vec::len), Some(20));
    for q in ["limit=0", "limit=101", "limit=ten", "cursor=nope"] {
        let r = api.get(&format!("/v1/users/{user}/orders?{q}"), Some(&token)).await.expect("page");
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{q}");
    }
    assert_eq!(api.get(&format!("/v1/users/{other_user}/orders"), Some(&token)).await.expect("page").status, 403);
}
