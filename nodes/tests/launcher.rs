//! The command line: `playground up` supervises its node, keeps data across restarts and stops cleanly;
//! `playground up --add-node` grows a running cluster by one node; bad flags and files are refused with
//! one line that names them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    api.wait_ready(Duration::from_secs(30)).await.expect("the node serves");
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
    api.wait_ready(Duration::from_secs(30)).await.expect("the restarted node serves");
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

/// `playground up --add-node` in the foreground, and the lines it prints. Dropped before it is stopped
/// (a failing test), it is stopped with SIGTERM so that it stops its node too, then killed.
struct AddNode {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl AddNode {
    fn start(data_dir: &std::path::Path) -> AddNode {
        let mut child = Command::new(BIN)
            .args(["up", "--add-node", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "error,openraft=off")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start up --add-node");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        AddNode { child, lines }
    }

    /// What follows `marker` in the next line that holds it.
    fn wait_for_line(&self, marker: &str, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let line = self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| panic!("no line holding {marker:?}: {e}"));
            if let Some(pos) = line.find(marker) {
                return line[pos + marker.len()..].to_owned();
            }
        }
    }

    fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM up --add-node");
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < until, "up --add-node did not stop within {deadline:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AddNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The members of `GET /v1/cluster`, and whether `node` holds a replica of some shard.
async fn members_and_replicas(api: &Api, admin: &str, node: &str) -> Option<(Vec<String>, bool)> {
    let r = api.get("/v1/cluster", Some(admin)).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let v = r.json();
    let mut members: Vec<String> =
        v["members"].as_array()?.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
    members.sort();
    let holds = v["shards"]
        .as_array()?
        .iter()
        .any(|s| s["replicas"].as_array().is_some_and(|r| r.iter().any(|id| id.as_str() == Some(node))));
    Some((members, holds))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_add_node_joins_a_running_cluster_and_takes_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("PLAYGROUND_NODES", "3"), ("PLAYGROUND_GATEWAYS", "1"), ("PLAYGROUND_SHARDS", "8")];
    let mut up = NodeProcess::start_launcher(BIN.as_ref(), dir.path(), &env).expect("up --nodes 3 starts");
    let api = Api::new(&up.url);
    api.wait_ready(Duration::from_secs(60)).await.expect("the cluster serves");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin token");
    let admin = admin.trim();

    let mut added = AddNode::start(dir.path());
    let joining = added.wait_for_line("node-4 joining the cluster at ", Duration::from_secs(30));
    assert!(joining.starts_with("127.0.0.1:"), "{joining}");
    assert!(joining.contains("playground node --config "), "the line says how to start it again: {joining}");
    added.wait_for_line("node-4: node listening at http://127.0.0.1:", Duration::from_secs(60));

    let wanted: Vec<String> = (1..=4).map(|i| format!("node-{i}")).collect();
    let joined = eventually(Duration::from_secs(120), "node-4 is a member holding replicas", || async {
        let (members, holds) = members_and_replicas(&api, admin, "node-4").await?;
        (members == wanted && holds).then_some(())
    })
    .await;
    if let Err(e) = joined {
        let now = api.get("/v1/cluster", Some(admin)).await.map(|r| r.text);
        panic!("{e:#}; GET /v1/cluster: {now:?}");
    }
    let config = dir.path().join("node-4/node.toml");
    assert!(config.is_file(), "node-4 keeps its configuration under the data dir");

    let status = tokio::task::block_in_place(|| added.terminate(Duration::from_secs(30)));
    assert!(status.success(), "up --add-node stops cleanly: {status}");
    let status = tokio::task::block_in_place(|| up.terminate(Duration::from_secs(30))).expect("up stops");
    assert!(status.success(), "up stops cleanly: {status}");
}

#[test]
fn add_node_refuses_a_data_dir_without_a_cluster_and_a_cluster_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8");
    fails_with(&["up", "--add-node", "--data-dir", path], &[], path);
    fails_with(&["up", "--add-node", "--data-dir", path], &[], "no running cluster");
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "nothing is written");
    fails_with(&["up", "--add-node", "--nodes", "3", "--data-dir", path], &[], "--nodes");
    fails_with(
        &["up", "--data-dir", path],
        &[("PLAYGROUND_ADD_NODE", "1"), ("PLAYGROUND_GATEWAYS", "2")],
        "--gateways",
    );
}
