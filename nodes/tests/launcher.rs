//! The command line: `playground up` supervises its node, keeps data across restarts and stops cleanly;
//! bad flags and files are refused with one line that names them.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use simulations::{eventually, Api, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_restarts_and_stops_its_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = NodeProcess::start_launcher(BIN.as_ref(), dir.path(), &[]).expect("up starts");
    let api = Api::new(&up.url);
    assert_eq!(api.get("/readyz", None).await.expect("readyz").status, 200);
    let (user, token) = api.signup("up@example.com").await.expect("signup");

    // Data and secrets live under the data dir, secrets readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    for secret in ["token.key", "admin.token", "node-1/node.toml"] {
        let mode = std::fs::metadata(dir.path().join(secret)).expect(secret).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{secret} is private");
    }
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin token");
    assert_eq!(api.get("/v1/cluster", Some(admin.trim())).await.expect("cluster").status, 200);

    let children = children_of(up.pid());
    assert_eq!(children.len(), 1, "one node process under up: {children:?}");
    kill(Pid::from_raw(children[0] as i32), Signal::SIGKILL).expect("kill -9 the node");
    let url = up.wait_for_line("gateway ready at ", Duration::from_secs(60)).expect("the node is started again");
    let api = Api::new(&url);
    let me = api.get(&format!("/v1/users/{user}"), Some(&token)).await.expect("get");
    assert_eq!(me.status, 200, "data and sessions survive the restart");

    let node = children_of(up.pid());
    let status = up.terminate(Duration::from_secs(30)).expect("up stops on SIGTERM");
    assert!(status.success(), "{status}");
    eventually(Duration::from_secs(10), "the node is gone", || async {
        node.iter()
            .all(|p| {
                !std::path::Path::new(&format!("/proc/{p}")).exists()
                    || std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z "))
            })
            .then_some(())
    })
    .await
    .expect("no node left behind");
}

fn fails_with(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = Command::new(BIN).args(args).envs(env.iter().copied()).output().expect("run playground");
    assert!(!out.status.success(), "{args:?} must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err:?} should name {needle:?}");
}

#[test]
fn bad_flags_files_and_fields_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    fails_with(&["node", "--bogus"], &[], "--bogus");
    fails_with(&["node", "--http", "not-an-address"], &[], "--http");
    let missing = dir.path().join("missing.toml");
    fails_with(&["node", "--config", missing.to_str().expect("utf-8")], &[], "missing.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cluster]\nshards = 0\n").expect("write");
    fails_with(&["node", "--config", bad.to_str().expect("utf-8")], &[], "cluster.shards");
    std::fs::write(&bad, "[limits]\nmax_inflight = 3\n").expect("write");
    fails_with(&["node", "--config", bad.to_str().expect("utf-8")], &[], "max_inflight");
    fails_with(&["node"], &[("PLAYGROUND_SHARDS", "many")], "PLAYGROUND_SHARDS");
    fails_with(&["up", "--nodes", "9"], &[], "--nodes");
    let help = Command::new(BIN).arg("--help").output().expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("PLAYGROUND_HTTP") && text.contains("precedence"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_cluster_refuses_a_data_dir_written_by_one_node() {
    let mut single = simulations::TestCluster::start(BIN.as_ref(), &[]).expect("node starts");
    let api = Api::new(&single.node.url);
    api.signup("alone@example.com").await.expect("signup");
    assert!(single.node.terminate(Duration::from_secs(30)).expect("stop").success());
    let dir = single.data_dir().to_owned();
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
        })
        .collect();
    let config = dir.join("clustered.toml");
    std::fs::write(&config, format!(
        "[node]\nid = \"node-1\"\nhttp = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[cluster]\nlisten = \"127.0.0.1:{}\"\nseeds = [\"node-1@127.0.0.1:{}\", \"node-2@127.0.0.1:{}\", \"node-3@127.0.0.1:{}\"]\ncookie = \"a-cookie-of-sixteen-chars\"\n\n[security]\ntoken_key = \"a-token-key-of-at-least-32-bytes-long\"\n",
        dir.display(), ports[0], ports[0], ports[1], ports[2]
    )).expect("write config");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(["node", "--config"]).arg(&config).env("RUST_LOG", "error").output()
    })
    .await
    .expect("join")
    .expect("run");
    assert!(!out.status.success(), "the node must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fresh data directory"), "{err}");
}
