//! The `Cluster` API in-process, over the local log and a temporary data directory: the middle boundary
//! of the product, below HTTP and above storage, where each operation's typed answer and each refusal's
//! error is what the gateway will turn into a response.

use actors::{start_node, CallOptions, NewUser, NodeHandle, UserChanges};
use cluster_config::Config;
use playground_proto::{ApiError, NewOrder, OrderAction, OrderItem, OrderStatus, UserRecord};

async fn node(dir: &std::path::Path) -> NodeHandle {
    let mut config = Config::default();
    config.node.data_dir = dir.to_owned();
    config.cluster.shards = 8;
    // Cheap hashes: this test is about the calls, not the cost of argon2.
    config.security.argon2_memory_kib = 1024;
    config.security.argon2_iterations = 1;
    start_node(&config, vec![7; 32]).await.expect("the node starts")
}

fn user(email: &str) -> NewUser {
    NewUser { email: email.into(), name: "Ada".into(), password: "correct horse".into() }
}

fn order(sku: &str) -> NewOrder {
    NewOrder { items: vec![OrderItem { sku: sku.into(), quantity: 2, unit_price_cents: 150 }], currency: "EUR".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_up_orders_pays_and_the_answers_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path()).await;
    let cluster = node.cluster.clone();
    let opts = CallOptions::default();

    let created = cluster.register(user("ada@example.com")).await.expect("register");
    assert_eq!((created.email.as_str(), created.version), ("ada@example.com", 1));
    assert_eq!(cluster.register(user("ADA@example.com ")).await.err(), Some(ApiError::EmailTaken));

    let login = cluster.login("ada@example.com", "correct horse".into()).await.expect("login");
    assert_eq!(cluster.login("ada@example.com", "wrong".into()).await.err(), Some(ApiError::InvalidCredentials));
    let (who, session) = cluster.authenticate(&login.token, opts).await.expect("the token works");
    assert_eq!(who.user_id, created.id);
    assert_eq!(session.session_id, login.session.session_id);
    assert_eq!(who.session_id(), login.session.session_id);

    let first = cluster.create_order(&who, order("A-1"), Some("k1".into()), opts).await.expect("create");
    assert!(first.created && first.order.total_cents == 300 && first.order.status == OrderStatus::Pending);
    let again = cluster.create_order(&who, order("A-1"), Some("k1".into()), opts).await.expect("repeat");
    assert!(!again.created && again.order.id == first.order.id, "one order per idempotency key");
    let reused = cluster.create_order(&who, order("B-2"), Some("k1".into()), opts).await;
    assert_eq!(reused.err(), Some(ApiError::IdempotencyKeyReused));

    let id = first.order.id.clone();
    let stale = cluster.order_action(&who, &id, OrderAction::Pay, Some(vec![9]), opts).await;
    assert_eq!(stale.err(), Some(ApiError::PreconditionFailed { current: 1 }));
    let paid = cluster.order_action(&who, &id, OrderAction::Pay, Some(vec![1]), opts).await.expect("pay");
    assert_eq!((paid.status, paid.version), (OrderStatus::Paid, 2));
    let twice = cluster.order_action(&who, &id, OrderAction::Pay, None, opts).await;
    assert!(matches!(twice, Err(ApiError::InvalidTransition { .. })), "{twice:?}");
    assert_eq!(cluster.get_order(&who, &id, opts).await.expect("read").version, 2);
    let page = cluster.list_orders(&who, &who.user_id, 10, None).await.expect("list");
    assert_eq!(page.orders.len(), 1);
    assert_eq!(page.next_cursor, None);

    let renamed = UserChanges { name: Some("Ada L.".into()), ..UserChanges::default() };
    let any = |_: &UserRecord, _: &str| Ok(());
    let updated = cluster.update_user(&who, &who.user_id, renamed, Some(vec![1]), opts, any).await.expect("update");
    assert_eq!((updated.name.as_str(), updated.version), ("Ada L.", 2));
    let unproven = UserChanges { password: Some("a new password".into()), ..UserChanges::default() };
    let refused = cluster.update_user(&who, &who.user_id, unproven, None, opts, any).await;
    assert_eq!(refused.err(), Some(ApiError::CurrentPasswordRequired));

    let other = cluster.register(user("bob@example.com")).await.expect("register bob");
    assert_eq!(cluster.get_user(&who, &other.id, opts).await.err(), Some(ApiError::Forbidden));

    cluster.logout(&who).await.expect("logout");
    assert_eq!(cluster.authenticate(&login.token, opts).await.err(), Some(ApiError::Unauthorized));
    // Every call made with the ended session checks it where it runs, and refuses it before anything else.
    assert_eq!(cluster.get_order(&who, &id, opts).await.err(), Some(ApiError::Unauthorized));
    let refused = cluster.create_order(&who, order("C-1"), None, opts).await;
    assert_eq!(refused.err(), Some(ApiError::Unauthorized));
    assert_eq!(cluster.get_user(&who, &other.id, opts).await.err(), Some(ApiError::Unauthorized));
    let page = cluster.list_orders(&who, &who.user_id, 10, None).await;
    assert_eq!(page.err(), Some(ApiError::Unauthorized));
    drop(cluster);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_node_acknowledged_is_there_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (user_id, order_id) = {
        let node = node(dir.path()).await;
        let cluster = node.cluster.clone();
        cluster.register(user("carol@example.com")).await.expect("register");
        let login = cluster.login("carol@example.com", "correct horse".into()).await.expect("login");
        let who = cluster.authenticate(&login.token, CallOptions::default()).await.expect("auth").0;
        let created = cluster.create_order(&who, order("C-3"), None, CallOptions::default()).await.expect("create");
        drop(cluster);
        node.stop().await;
        (who.user_id, created.order.id)
    };
    let node = node(dir.path()).await;
    let login = node.cluster.login("carol@example.com", "correct horse".into()).await.expect("login again");
    let who = node.cluster.authenticate(&login.token, CallOptions::default()).await.expect("auth").0;
    assert_eq!(who.user_id, user_id);
    let found = node.cluster.get_order(&who, &order_id, CallOptions::default()).await.expect("the order is there");
    assert_eq!(found.items[0].sku, "C-3");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_by_a_password_change_cannot_finish_a_change_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path()).await;
    let cluster = node.cluster.clone();
    let opts = CallOptions::default();
    let any = |_: &UserRecord, _: &str| Ok(());
    let ada = cluster.register(user("ada@example.com")).await.expect("register");
    let mine = cluster.login("ada@example.com", "correct horse".into()).await.expect("login");
    let stolen = cluster.login("ada@example.com", "correct horse".into()).await.expect("login");
    let me = cluster.authenticate(&mine.token, opts).await.expect("authenticates").0;
    // Authenticated before the password changes, as a request already on its way would be.
    let thief = cluster.authenticate(&stolen.token, opts).await.expect("authenticates").0;

    let change = UserChanges {
        password: Some("a new password".into()),
        current_password: Some("correct horse".into()),
        ..UserChanges::default()
    };
    cluster.update_user(&me, &ada.id, change, None, opts, any).await.expect("the owner changes the password");
    let late = UserChanges {
        password: Some("the thief's password".into()),
        current_password: Some("correct horse".into()),
        ..UserChanges::default()
    };
    let refused = cluster.update_user(&thief, &ada.id, late, None, opts, any).await.err();
    // Every call made for the thief checks its session where it runs: ended by the change, it is refused
    // before the old password is even looked at.
    assert_eq!(refused, Some(ApiError::Unauthorized), "the old password proves nothing now");
    let rename = UserChanges { name: Some("Not Ada".into()), ..UserChanges::default() };
    let refused = cluster.update_user(&thief, &ada.id, rename, None, opts, any).await.err();
    assert_eq!(refused, Some(ApiError::Unauthorized), "the ended session changes nothing");
    let stored = cluster.get_user(&me, &ada.id, opts).await.expect("read");
    assert_eq!((stored.name.as_str(), stored.version), ("Ada", 2));
    assert!(cluster.login("ada@example.com", "a new password".into()).await.is_ok());
    drop(cluster);
    node.stop().await;
}
