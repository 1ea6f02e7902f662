//! `playground health`, the container health check: exit 0 when the process answers, 1 when it does not.

use std::process::{Command, Output};
use std::time::Duration;

use simulations::{eventually, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn health(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN).arg("health").args(args).envs(env.iter().copied()).output().expect("run playground health")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_on_a_serving_node_and_1_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = NodeProcess::start(BIN.as_ref(), dir.path(), &[]).expect("node starts");

    let out = health(&["--url", &format!("{}/healthz", node.url)], &[]);
    assert!(out.status.success(), "healthz: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("healthy: "));

    // Without --url: the port of PLAYGROUND_HTTP, a wildcard address read as loopback.
    let port = node.url.rsplit(':').next().expect("port").to_owned();
    let http = format!("0.0.0.0:{port}");
    eventually(Duration::from_secs(10), "readyz", || {
        let out = health(&["--ready"], &[("PLAYGROUND_HTTP", &http)]);
        async move { out.status.success().then_some(()) }
    })
    .await
    .expect("ready");

    node.kill9().expect("kill");
    let out = health(&["--url", &format!("{}/healthz", node.url), "--timeout", "1"], &[]);
    assert_eq!(out.status.code(), Some(1), "a stopped node is unhealthy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("playground: GET "), "{err}");
}
