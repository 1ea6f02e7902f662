//! Users through the public HTTP API of a real node: every route and error code of docs/api.md.

use reqwest::Method;
use serde_json::json;
use simulations::{Api, TestCluster};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn start() -> (TestCluster, Api) {
    let cluster = TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&cluster.node.url);
    (cluster, api)
}

fn fields(r: &simulations::Response) -> Vec<String> {
    r.json()["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_validates_and_keeps_emails_unique() {
    let (_c, api) = start();
    let r = api
        .post(
            "/v1/users",
            None,
            &json!({"email": "  Ada@Example.com ", "name": " Ada ", "password": "saffron kettle 7 orbit"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.field("id");
    assert_eq!(r.header("location"), Some(format!("/v1/users/{id}").as_str()));
    assert_eq!(r.header("etag"), Some("\"1\""));
    let body = r.json();
    assert_eq!(body["email"], "Ada@Example.com");
    assert_eq!(body["name"], "Ada");
    assert_eq!(body["version"], 1);
    assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert!(!r.text.contains("saffron") && !r.text.contains("argon2") && body.get("password").is_none());

    // Case-insensitive and trimmed.
    let dup = api
        .post(
            "/v1/users",
            None,
            &json!({"email": "ada@example.COM", "name": "Other", "password": "another granite pass"}),
        )
        .await
        .expect("post");
    assert_eq!((dup.status, dup.code().as_str()), (409, "email_taken"));
    assert_eq!(dup.header("content-type"), Some("application/problem+json"));

    let bad = api
        .post("/v1/users", None, &json!({"email": "no-at-sign", "name": "   ", "password": "short"}))
        .await
        .expect("post");
    assert_eq!((bad.status, bad.code().as_str()), (422, "validation_failed"));
    assert_eq!(fields(&bad), vec!["email", "name", "password"]);
    let missing = api.post("/v1/users", None, &json!({"name": "A"})).await.expect("post");
    assert_eq!(missing.status, 422);
    assert_eq!(fields(&missing), vec!["email", "password"]);
    let long = api
        .post("/v1/users", None, &json!({"email": "a@b.co", "name": "x".repeat(101), "password": "x".repeat(129)}))
        .await
        .expect("post");
    assert_eq!(fields(&long), vec!["name", "password"]);

    for (body, why) in [
        (json!({"email": 5, "name": "A", "password": "plum anchor velvet 42"}), "number for a string"),
        (json!({"email": "a@b.co", "name": "A", "password": "plum anchor velvet 42", "admin": true}), "unknown field"),
        (json!(["not", "an", "object"]), "array body"),
        (json!({"email": null, "name": "A", "password": "plum anchor velvet 42"}), "null field"),
    ] {
        let r = api.post("/v1/users", None, &body).await.expect("post");
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{why}: {}", r.text);
    }
    let malformed = api
        .send_raw(Method::POST, "/v1/users", None, Some("application/json"), b"{\"email\":".to_vec())
        .await
        .expect("post");
    assert_eq!((malformed.status, malformed.code().as_str()), (400, "bad_request"));
    let charset = api
        .send_raw(
            Method::POST,
            "/v1/users",
            None,
            Some("application/json; charset=utf-8"),
            br#"{"email":"c@d.co","name":"C","password":"plum anchor velvet 42"}"#.to_vec(),
        )
        .await
        .expect("post");
    assert_eq!(charset.status, 201, "{}", charset.text);
    let text = api.send_raw(Method::POST, "/v1/users", None, Some("text/plain"), b"{}".to_vec()).await.expect("post");
    assert_eq!((text.status, text.code().as_str()), (415, "unsupported_media_type"));
    let none = api.send_raw(Method::POST, "/v1/users", None, None, b"{}".to_vec()).await.expect("post");
    assert_eq!(none.status, 415);
    let huge =
        format!(r#"{{"email":"h@h.co","name":"{}","password":"plum anchor velvet 42"}}"#, "n".repeat(300 * 1024));
    let big =
        api.send_raw(Method::POST, "/v1/users", None, Some("application/json"), huge.into_bytes()).await.expect("post");
    assert_eq!((big.status, big.code().as_str()), (413, "payload_too_large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_and_changes_only_itself() {
    let (_c, api) = start();
    let (id, token) = api.signup("reader@example.com").await.expect("signup");
    let (other, other_token) = api.signup("other@example.com").await.expect("signup");

    let me = api.get(&format!("/v1/users/{id}"), Some(&token)).await.expect("get");
    assert_eq!(me.status, 200);
    assert_eq!(me.header("etag"), Some("\"1\""));
    assert_eq!(me.field("email"), "reader@example.com");
    let them = api.get(&format!("/v1/users/{other}"), Some(&token)).await.expect("get");
    assert_eq!((them.status, them.code().as_str()), (403, "forbidden"));
    let anon = api.get(&format!("/v1/users/{id}"), None).await.expect("get");
    assert_eq!((anon.status, anon.code().as_str()), (401, "unauthorized"));
    let forged = api.get(&format!("/v1/users/{id}"), Some(&format!("{token}x"))).await.expect("get");
    assert_eq!(forged.status, 401);
    let junk = api.get(&format!("/v1/users/{id}"), Some("not-a-token")).await.expect("get");
    assert_eq!(junk.status, 401);

    let path = format!("/v1/users/{id}");
    let renamed =
        api.send(Method::PATCH, &path, Some(&token), Some(&json!({"name": "Renamed"})), &[]).await.expect("patch");
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.json()["version"], 2);
    assert_eq!(renamed.header("etag"), Some("\"2\""));
    let stale = api
        .send(Method::PATCH, &path, Some(&token), Some(&json!({"name": "Stale"})), &[("if-match", "\"1\"")])
        .await
        .expect("patch");
    assert_eq!((stale.status, stale.code().as_str()), (412, "precondition_failed"));
    let fresh = api
        .send(Method::PATCH, &path, Some(&token), Some(&json!({"name": "Fresh"})), &[("if-match", "\"2\"")])
        .await
        .expect("patch");
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.field("name"), "Fresh");
    let empty = api.send(Method::PATCH, &path, Some(&token), Some(&json!({})), &[]).await.expect("patch");
    assert_eq!(empty.status, 422);
    let foreign = api
        .send(Method::PATCH, &format!("/v1/users/{other}"), Some(&token), Some(&json!({"name": "X"})), &[])
        .await
        .expect("patch");
    assert_eq!(foreign.status, 403);

    let taken = api
        .send(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({"email": "OTHER@example.com", "current_password": "correct horse battery"})),
            &[],
        )
        .await
        .expect("patch");
    assert_eq!((taken.status, taken.code().as_str()), (409, "email_taken"));
    let moved = api
        .send(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({"email": "moved@example.com", "password": "new password!", "current_password": "correct horse battery"})),
            &[],
        )
        .await
        .expect("patch");
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert!(api.login("moved@example.com", "new password!").await.is_ok());
    let old_pw = api
        .post("/v1/sessions", None, &json!({"email": "moved@example.com", "password": "correct horse battery"}))
        .await
        .expect("login");
    assert_eq!((old_pw.status, old_pw.code().as_str()), (401, "invalid_credentials"));
    // The old email is free again.
    api.register("reader@example.com", "whatever lantern pass").await.expect("old email is free");

    let not_mine = api.delete(&format!("/v1/users/{other}"), Some(&token)).await.expect("delete");
    assert_eq!(not_mine.status, 403);
    let gone = api.delete(&path, Some(&token)).await.expect("delete");
    assert_eq!(gone.status, 204);
    assert_eq!(gone.text, "");
    assert_eq!(api.get(&path, Some(&token)).await.expect("get").status, 401, "deleting revokes the sessions");
    let relogin = api
        .post("/v1/sessions", None, &json!({"email": "moved@example.com", "password": "new password!"}))
        .await
        .expect("login");
    assert_eq!(relogin.status, 401);
    api.register("moved@example.com", "reused-email").await.expect("a deleted user's email is free");
    assert_eq!(api.get(&format!("/v1/users/{other}"), Some(&other_token)).await.expect("get").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_credentials_takes_the_current_password_and_ends_other_sessions() {
    let (_c, api) = start();
    let (id, mine) = api.signup("keys@example.com").await.expect("signup");
    let laptop = api.login("keys@example.com", "correct horse battery").await.expect("login");
    let phone = api.login("keys@example.com", "correct horse battery").await.expect("login");
    let path = format!("/v1/users/{id}");
    let patch = |body: serde_json::Value| {
        let (api, path, mine) = (api.clone(), path.clone(), mine.clone());
        async move { api.send(Method::PATCH, &path, Some(&mine), Some(&body), &[]).await.expect("patch") }
    };

    let new = "a brand new passphrase";
    let missing = patch(json!({"password": new})).await;
    let wrong = patch(json!({"password": new, "current_password": "not my password"})).await;
    let email_only = patch(json!({"email": "elsewhere@example.com"})).await;
    for refused in [&missing, &wrong, &email_only] {
        assert_eq!((refused.status, refused.code().as_str()), (403, "forbidden"), "{}", refused.text);
    }
    assert_eq!(missing.json()["detail"], wrong.json()["detail"], "no hint whether it was missing or wrong");
    let weak = patch(json!({"password": "keys1234", "current_password": "correct horse battery"})).await;
    assert_eq!((weak.status, weak.code().as_str()), (422, "validation_failed"), "{}", weak.text);
    assert_eq!(weak.json()["errors"][0]["field"], "password");
    let alone = patch(json!({"current_password": "correct horse battery"})).await;
    assert_eq!((alone.status, alone.json()["errors"][0]["field"].as_str()), (422, Some("body")));
    for token in [&mine, &laptop, &phone] {
        assert_eq!(api.get(&path, Some(token)).await.expect("get").status, 200, "nothing changed yet");
    }
    assert_eq!(api.get(&path, Some(&mine)).await.expect("get").json()["version"], 1, "no refused change was applied");

    let changed = patch(json!({"password": new, "current_password": "correct horse battery"})).await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(api.get(&path, Some(&mine)).await.expect("get").status, 200, "the session that asked stays");
    for other in [&laptop, &phone] {
        let r = api.get("/v1/sessions/current", Some(other)).await.expect("get");
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"), "every other session ended");
    }
    let listed = api.get(&format!("{path}/sessions"), Some(&mine)).await.expect("list");
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1), "{}", listed.text);
    let old_password = json!({"email": "keys@example.com", "password": "correct horse battery"});
    assert_eq!(api.post("/v1/sessions", None, &old_password).await.expect("login").status, 401);
    assert!(api.login("keys@example.com", new).await.is_ok());
    let renamed = patch(json!({"name": "Only A Name"})).await;
    assert_eq!(renamed.status, 200, "a change of name alone takes no password: {}", renamed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_and_invisible_characters_are_refused() {
    let (_c, api) = start();
    let register = |email: &str, name: &str, password: &str| {
        let body = json!({"email": email, "name": name, "password": password});
        let api = api.clone();
        async move { api.post("/v1/users", None, &body).await.expect("post") }
    };
    for (email, name, password, field) in [
        ("weak@example.com", "Weak", "password123", "password"),
        ("weak@example.com", "Weak", "qwertyuiop", "password"),
        ("lovelace@example.com", "Ada Lovelace", "adalovelace", "password"),
        ("zero\u{200B}width@example.com", "Z", "plum anchor velvet 42", "email"),
        ("nul\u{0}@example.com", "N", "plum anchor velvet 42", "email"),
        ("bidi@example.com\u{202E}", "B", "plum anchor velvet 42", "email"),
    ] {
        let r = register(email, name, password).await;
        assert_eq!((r.status, r.code().as_str()), (422, "validation_failed"), "{email:?} {password}: {}", r.text);
        assert_eq!(r.json()["errors"][0]["field"], field, "{}", r.text);
    }
    let ok = register("strong@example.com", "Strong", "plum anchor velvet 42").await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_current_password_is_throttled_like_a_login() {
    let env = [("PLAYGROUND_LOGIN_ACCOUNT_BURST", "3")];
    let c = TestCluster::start(BIN.as_ref(), &env).expect("node starts");
    let api = Api::new(&c.node.url);
    let (id, token) = api.signup("guarded@example.com").await.expect("signup");
    let path = format!("/v1/users/{id}");
    let mut statuses = vec![];
    for i in 0..5 {
        let body = json!({"password": "a brand new passphrase", "current_password": format!("guess {i}")});
        let r = api.send(Method::PATCH, &path, Some(&token), Some(&body), &[]).await.expect("patch");
        if r.status == 429 {
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, vec![403, 403, 403, 429, 429]);
    let renamed = api.send(Method::PATCH, &path, Some(&token), Some(&json!({"name": "N"})), &[]).await.expect("patch");
    assert_eq!(renamed.status, 200, "changes that take no password are not held up: {}", renamed.text);
    assert!(api.login("guarded@example.com", "correct horse battery").await.is_ok(), "nor are logins");
}
