//! A data directory written by an earlier version opens and serves unchanged: `fixtures/data-dir-v1.tar.gz`
//! was made by the version before the wire and disk types moved into their own crate
//! (`fixtures/make-data-dir.sh`, which printed the token and order ids below). The session it issued
//! authenticates until it expires (and is refused after), the orders read back as they were left, the idempotency key still deduplicates, and the
//! password still logs in. What it left readable by others is made its owner's alone.

use std::path::Path;
use std::process::Command;

use simulations::{Api, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_playground");
const TOKEN: &str =
    "pg1.01M8VVPAEP1M5B26R2ND325SWQ.01M8VVPAFJQ0T9R99GK0P3YAH9.SF7i0C3kJDr47mkCkIpk7IQjQQce5ZRh-cQqJk_qQHk";
const PAID: &str = "01M8VVPAP4GB6TYN5MZSXG8VVG";
const KEYED: &str = "01M8VVPAWJ3YAWCMTN7QTRJGF3";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// When the fixture's session was made: the timestamp of its id, a ULID (48 bits of milliseconds in its first
/// ten Crockford base-32 digits).
fn session_created_ms() -> u64 {
    const DIGITS: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let session = TOKEN.split('.').nth(2).expect("the token names its session");
    session[..10].chars().fold(0, |ms, c| ms * 32 + DIGITS.find(c).expect("a Crockford digit") as u64)
}

fn unpack(into: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-dir-v1.tar.gz");
    let status = Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(into).status().expect("tar runs");
    assert!(status.success(), "unpack {}", fixture.display());
}

/// Every folder under `dir` (itself included) is 0700 and every file 0600.
fn assert_owner_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            assert_owner_only(&path);
        } else {
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_version_opens_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack(dir.path());
    let env = [("PLAYGROUND_SHARDS", "8")];
    let mut node = NodeProcess::start(BIN.as_ref(), dir.path(), &env).expect("the node opens the old directory");
    // The old version left its store world-readable (0644); it holds password hashes and session verifiers.
    assert_owner_only(dir.path());
    for round in ["opened", "restarted"] {
        let api = Api::new(&node.url);
        // The old session lasts the default 24 h from when the fixture was made: it authenticates until then,
        // and is refused as expired after.
        let old = api.get("/v1/sessions/current", Some(TOKEN)).await.expect("session");
        let expected = if now_ms() < session_created_ms() + 24 * 3_600_000 { 200 } else { 401 };
        assert_eq!(old.status, expected, "{round}: the old session: {}", old.text);
        let token = api.login("compat@example.com", "correct horse battery").await.expect("the old password logs in");
        let token = token.as_str();
        let paid = api.get(&format!("/v1/orders/{PAID}"), Some(token)).await.expect("get");
        assert_eq!(paid.status, 200, "{round}: the old session reads the paid order: {}", paid.text);
        let paid = paid.json();
        assert_eq!((paid["status"].as_str(), paid["version"].as_u64()), (Some("paid"), Some(2)), "{round}");
        assert_eq!(paid["items"][0]["sku"], "OLD-1");
        assert_eq!(paid["total_cents"], 2500);
        let history: Vec<&str> =
            paid["history"].as_array().expect("history").iter().filter_map(|h| h["status"].as_str()).collect();
        assert_eq!(history, vec!["pending", "paid"], "{round}");

        let body = serde_json::json!({"items": [{"sku": "OLD-2", "quantity": 1, "unit_price_cents": 500}]});
        let key = [("idempotency-key", "compat-key")];
        let again =
            api.send(reqwest::Method::POST, "/v1/orders", Some(token), Some(&body), &key).await.expect("repeat");
        assert_eq!(again.json()["id"], KEYED, "{round}: the old idempotency key still names its order: {}", again.text);

        let session = api.get("/v1/sessions/current", Some(token)).await.expect("session");
        let user_id = session.json()["user_id"].as_str().expect("user id").to_owned();
        let list = api.get(&format!("/v1/users/{user_id}/orders"), Some(token)).await.expect("list").json();
        let ids: Vec<&str> = list["items"].as_array().expect("items").iter().filter_map(|o| o["id"].as_str()).collect();
        assert_eq!(ids.len(), 2, "{round}: the two orders and no more: {ids:?}");
        if round == "opened" {
            node.terminate(std::time::Duration::from_secs(15)).expect("stops");
            node = NodeProcess::start(BIN.as_ref(), dir.path(), &env).expect("starts again");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_is_its_owners_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = NodeProcess::start(BIN.as_ref(), &data, &[]).expect("the node starts");
    let api = Api::new(&node.url);
    let (_, token) = api.signup("fresh@example.com").await.expect("signup");
    api.create_order(&token, "NEW-1", None).await.expect("order");
    assert_owner_only(&data);
}
