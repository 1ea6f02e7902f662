//! Raft groups of several nodes in one process, over an in-memory transport that can cut a node off
//! (openraft keeps no process-global state, so three `RaftLog`s on three stores are three nodes). For
//! this crate's tests and, behind the `testsuite` feature, for the control plane's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use playground_proto::{LogEntry, LogIndex, ShardId};

use crate::{RaftLog, RaftSettings, RaftTransport, Reachability, ShardLog, Store};

pub fn entry(key: String, value: u32) -> LogEntry {
    let mut e = LogEntry::default();
    e.put(key, &value);
    e
}

/// Polls `check` every 20 ms until it holds; panics naming `what` at the deadline.
pub async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Routes raft messages between the `RaftLog`s of a test cluster; a node that is cut off neither sends
/// nor receives.
#[derive(Default)]
pub struct Net {
    nodes: Mutex<HashMap<String, Weak<RaftLog>>>,
    cut: Mutex<HashSet<String>>,
    /// Every raft message sent, delivered or not.
    pub sent: std::sync::atomic::AtomicU64,
}

struct MemTransport {
    from: String,
    net: Arc<Net>,
}

impl RaftTransport for MemTransport {
    fn send(&self, to: &str, payload: Vec<u8>, timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.net.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cut = self.net.cut.lock().expect("lock");
        let target = if cut.contains(&self.from) || cut.contains(to) {
            Err(format!("{} → {to}: cut off", self.from))
        } else {
            self.net.nodes.lock().expect("lock").get(to).and_then(Weak::upgrade).ok_or(format!("{to} is down"))
        };
        drop(cut);
        Box::pin(async move {
            let served = target?.handle_rpc(payload);
            tokio::time::timeout(timeout, served).await.map_err(|_| "timed out".to_owned())
        })
    }

    /// A perfect failure detector: a node is down exactly while it is stopped or cut off (from this
    /// node's side too: a cut node sees every other node down).
    fn reachability(&self, node: &str) -> Option<Reachability> {
        let cut = self.net.cut.lock().expect("lock");
        let running = self.net.nodes.lock().expect("lock").get(node).is_some_and(|n| n.strong_count() > 0);
        let reachable = node == self.from || (running && !cut.contains(node) && !cut.contains(&self.from));
        Some(if reachable { Reachability::Up } else { Reachability::Down })
    }
}

pub struct Cluster {
    net: Arc<Net>,
    pub names: Vec<String>,
    /// The first `seeds` names are the seed list every node starts with; the others joined later.
    seeds: usize,
    shards: u32,
    snapshot_logs: u64,
    dirs: Vec<tempfile::TempDir>,
    pub nodes: Vec<Option<(Arc<Store>, Arc<RaftLog>)>>,
}

impl Cluster {
    pub async fn start(n: usize, shards: u32, snapshot_logs: u64) -> Cluster {
        let names = (0..n).map(|i| format!("node-{i}")).collect();
        let dirs = (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let nodes = (0..n).map(|_| None).collect();
        let mut c = Cluster { net: Arc::default(), names, seeds: n, shards, snapshot_logs, dirs, nodes };
        for i in 0..n {
            c.start_node(i).await;
        }
        c
    }

    pub async fn start_node(&mut self, i: usize) {
        let store = Store::open(self.dirs[i].path(), self.shards).expect("open");
        let transport = Arc::new(MemTransport { from: self.names[i].clone(), net: self.net.clone() });
        let seeds = self.names[..self.seeds].to_vec();
        let mut settings = RaftSettings::new(self.names[i].clone(), seeds, 3, transport);
        settings.snapshot_logs = self.snapshot_logs;
        let log = RaftLog::start(store.clone(), settings).await.expect("start");
        self.net.nodes.lock().expect("lock").insert(self.names[i].clone(), Arc::downgrade(&log));
        self.nodes[i] = Some((store, log));
    }

    /// Starts one more node, outside the seed list; it holds no replica until it is given one. Returns
    /// its index.
    pub async fn join(&mut self) -> usize {
        let i = self.names.len();
        self.names.push(format!("node-{i}"));
        self.dirs.push(tempfile::tempdir().expect("tempdir"));
        self.nodes.push(None);
        self.start_node(i).await;
        i
    }

    pub async fn stop_node(&mut self, i: usize) {
        self.net.nodes.lock().expect("lock").remove(&self.names[i]);
        if let Some((_store, log)) = self.nodes[i].take() {
            log.shutdown().await;
        }
    }

    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }

    pub fn cut(&self, i: usize, off: bool) {
        let mut cut = self.net.cut.lock().expect("lock");
        if off {
            cut.insert(self.names[i].clone());
        } else {
            cut.remove(&self.names[i]);
        }
    }

    /// Raft messages sent so far by every node.
    pub fn messages_sent(&self) -> u64 {
        self.net.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn log(&self, i: usize) -> &Arc<RaftLog> {
        &self.nodes[i].as_ref().expect("node running").1
    }

    pub fn store(&self, i: usize) -> &Arc<Store> {
        &self.nodes[i].as_ref().expect("node running").0
    }

    /// The running node that believes it leads `shard`, skipping `except`.
    pub fn leader(&self, shard: ShardId, except: Option<usize>) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            Some(i) != except && self.nodes[i].as_ref().is_some_and(|(_, log)| log.leadership(shard).is_leader)
        })
    }

    pub async fn wait_leader(&self, shard: ShardId, except: Option<usize>) -> usize {
        let mut found = None;
        eventually(Duration::from_secs(10), &format!("a leader of shard {shard}"), || {
            found = self.leader(shard, except);
            found.is_some()
        })
        .await;
        found.expect("found")
    }

    /// Appends on the shard's current leader, following leader changes, until it is acknowledged.
    pub async fn append(&self, shard: ShardId, key: String, value: u32) -> LogIndex {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.wait_leader(shard, None).await;
            match self.log(leader).append(shard, entry(key.clone(), value)).await {
                Ok(index) => return index,
                Err(e) => assert!(Instant::now() < deadline, "append {key} on shard {shard}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the stores of nodes `on` hold `key` with `value` on `shard`.
    pub async fn wait_replicated_on(&self, on: &[usize], shard: ShardId, key: &str, value: u32) {
        for &i in on {
            let store = self.store(i).clone();
            let what = format!("{key} on node-{i}");
            eventually(Duration::from_secs(10), &what, || store.get::<u32>(shard, key).ok().flatten() == Some(value))
                .await;
        }
    }

    /// Waits until every running node's store holds `key` with `value` on `shard`.
    pub async fn wait_replicated(&self, shard: ShardId, key: &str, value: u32, within: Duration) {
        for i in (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()) {
            let store = self.store(i).clone();
            let what = format!("{key} on node-{i}");
            eventually(within, &what, || store.get::<u32>(shard, key).ok().flatten() == Some(value)).await;
        }
    }
}
