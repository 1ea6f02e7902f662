//! Durability: kill -9 in the middle of a write burst, restart on the same data, and every write that was
//! acknowledged before the kill is there, sessions included (invariant I1 on one node).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use simulations::{eventually, Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let mut users = vec![];
    for i in 0..8 {
        users.push(api.signup(&format!("durable{i}@example.com")).await.expect("signup"));
    }
    let acked: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let writers: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(u, (_, token))| {
            let (api, token, acked) = (api.clone(), token.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..10_000 {
                    match api.create_order(&token, &format!("SKU-{u}-{i}"), Some(&format!("k-{i}"))).await {
                        Ok(r) if r.status == 201 => acked.lock().expect("lock").push((u, r.field("id"))),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(60), "a burst of acknowledged writes", || async {
        (acked.lock().ok()?.len() >= 200).then_some(())
    })
    .await
    .expect("writes flow");
    c.node.kill9().expect("kill -9");
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    c.restart().expect("restart on the same data");
    let api = Api::new(&c.node.url);
    for (u, (user, token)) in users.iter().enumerate() {
        let mine: Vec<&String> = acked.iter().filter(|(owner, _)| *owner == u).map(|(_, id)| id).collect();
        // Sessions survive: the token from before the kill still works.
        let mut listed = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/users/{user}/orders?limit=100&cursor={c}"),
                None => format!("/v1/users/{user}/orders?limit=100"),
            };
            let page = api.get(&path, Some(token)).await.expect("list");
            assert_eq!(page.status, 200, "{}", page.text);
            let body = page.json();
            listed.extend(
                body["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|o| o["id"].as_str().unwrap_or_default().to_owned()),
            );
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        for id in &mine {
            assert!(listed.contains(id), "acknowledged order {id} of user {u} is lost");
        }
        // At most one write per user was in flight: anything else listed was never answered.
        assert!(listed.len() <= mine.len() + 1, "user {u}: {} listed, {} acknowledged", listed.len(), mine.len());
        if let Some(id) = mine.last() {
            let r = api.get(&format!("/v1/orders/{id}"), Some(token)).await.expect("get");
            assert_eq!(r.status, 200);
        }
    }
    assert!(acked.len() >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_and_restart_keeps_everything() {
    let mut c = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&c.node.url);
    let (user, token) = api.signup("restart@example.com").await.expect("signup");
    let id = api.create_order(&token, "KEEP", Some("keep-1")).await.expect("create").field("id");
    let status = c.node.terminate(Duration::from_secs(30)).expect("SIGTERM stops the node");
    assert!(status.success(), "{status}");
    c.restart().expect("restart");
    let api = Api::new(&c.node.url);
    assert_eq!(api.get(&format!("/v1/users/{user}"), Some(&token)).await.expect("get").status, 200);
    assert_eq!(api.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").status, 200);
    let again = api.create_order(&token, "KEEP", Some("keep-1")).await.expect("repeat");
    assert_eq!(again.field("id"), id, "idempotency keys survive a restart");
    let dup = api
        .post(
            "/v1/users",
            None,
            &serde_json::json!({"email": "restart@example.com", "name": "X", "password": "plum anchor velvet 42"}),
        )
        .await
        .expect("post");
    assert_eq!(dup.status, 409, "email claims survive a restart");
}
