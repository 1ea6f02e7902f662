//! Durable storage: one sled `Db` per process with one tree per shard, and the write path
//! command → log entry → apply, behind the [`ShardLog`] seam.
//!
//! [`LocalLog`] is the single-replica log: one committer thread takes every waiting entry, applies each
//! as one atomic sled batch, then makes the lot durable with `flush` plus `fdatasync` (sled's `flush`
//! alone stops at `sync_file_range`, which leaves data in the disk's write-back cache). It commits as soon
//! as it is idle, never on a timer, so a lone writer waits for one sync and a crowd shares one.
//! Only the committer thread writes to sled, and sled's own periodic flusher is off, which keeps
//! `apply_batch` and `flush` from ever running against each other. Other log engines (the raft log in
//! [`crate::RaftLog`]) write through [`Store::submit`] and [`Store::run`], which queue their sled work on the same
//! thread, so their durable writes share the group commit with everything else.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::Future;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use playground_proto::{codec, LogEntry, LogIndex, ShardId, ShardStatus};

use crate::apply::{read_counter, stage, APPLIED_KEY};
use crate::error::StoreError;
use crate::metrics;

/// The seam between entities and replication: an entry is acknowledged once it is applied to the
/// shard's state machine and durable. A replicated log implements the same trait.
pub trait ShardLog: Send + Sync + 'static {
    fn append(&self, shard: ShardId, entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>>;

    /// Who leads the shard, as this node knows it now. Cheap: called for every command. The default
    /// is a single replica's: this node, in term 1, for ever.
    fn leadership(&self, _shard: ShardId) -> Leadership {
        Leadership { term: 1, is_leader: true, leader: None }
    }

    /// Returns once this node is confirmed leader of the shard and its state machine has applied
    /// everything committed before the call: what the entities then read is linearizable. A single
    /// replica is always confirmed.
    fn read_barrier(&self, _shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Returns once this node leads the shard and its state machine has applied everything committed in
    /// earlier terms: what a write then decides from is current, and its own commit in this term fences
    /// it, so no quorum round is needed per write. Cheap after the first call of a term.
    fn write_barrier(&self, _shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The shard's replicas, leader, term and commit index, when this node holds a replica.
    fn status(&self, _shard: ShardId) -> Option<ShardStatus> {
        None
    }

    /// Whether every shard this node holds knows its leader.
    fn ready(&self) -> bool {
        true
    }
}

/// A shard's leadership as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub is_leader: bool,
    /// The leader's node name, when known.
    pub leader: Option<String>,
}

const SHARDS_KEY: &[u8] = b"shard_count";
/// The name of the node the store belongs to.
const NODE_KEY: &[u8] = b"node";
/// Present once the node has known a cluster metadata record.
const KNOWS_CLUSTER_KEY: &[u8] = b"knows_cluster";
const MAX_BATCH: usize = 4096;

struct CommitRequest {
    shard: ShardId,
    entry: LogEntry,
    submitted: Instant,
    reply: oneshot::Sender<Result<LogIndex, StoreError>>,
}

/// Called once a task's writes are durable (`Ok`), or with the error that kept them from being so.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Sled work of another log engine, run on the committer thread in submission order. The work returns
/// its completion, which carries the work's own outcome to whoever waits for it.
struct Task {
    work: Box<dyn FnOnce() -> Completion + Send>,
    durable: bool,
}

enum Job {
    Entry(CommitRequest),
    Task(Task),
}

/// The tree of the metadata group's state machine (members and placement, the control plane's record). Named apart from
/// the shards' trees so that it never depends on the shard count.
const META_TREE: &str = "meta";

/// The shards' state machines on disk, and the metadata group's.
pub struct Store {
    db: sled::Db,
    /// One tree per shard, then the metadata group's tree, so that the metadata group's id is
    /// `shard_count` wherever a group id indexes a tree.
    trees: Vec<sled::Tree>,
    shards: u32,
    commits: Option<mpsc::Sender<Job>>,
    committer: Option<thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel ends the committer after it has committed what it holds; joining it
        // releases sled's directory lock before anyone reopens the store.
        self.commits.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. The shard count is fixed when the store is created; the
    /// metadata group's tree is opened beside the shards' (created empty in a store that predates it).
    pub fn open(dir: &Path, shards: u32) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        restrict(dir).map_err(|e| StoreError::Io(format!("{}: cannot make it owner-only: {e}", dir.display())))?;
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        match db.get(SHARDS_KEY)? {
            Some(v) => {
                let stored =
                    u32::from_le_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        key: "shard_count".into(),
                        reason: "not 4 bytes".into(),
                    })?);
                if stored != shards {
                    return Err(StoreError::Io(format!(
                        "{} was created with {stored} shards; the shard count is fixed at bootstrap, not {shards}",
                        dir.display()
                    )));
                }
            }
            None => {
                db.insert(SHARDS_KEY, &shards.to_le_bytes())?;
                db.flush()?;
            }
        }
        let trees = (0..shards)
            .map(|s| format!("shard-{s}"))
            .chain([META_TREE.to_owned()])
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let data_file = File::open(dir.join("db")).map_err(|e| StoreError::Io(format!("open sled data file: {e}")))?;
        let (tx, rx) = mpsc::channel();
        let (db2, trees2) = (db.clone(), trees.clone());
        let syncs = Arc::new(AtomicU64::new(0));
        let syncs2 = syncs.clone();
        let committer = thread::Builder::new()
            .name("committer".into())
            .spawn(move || commit_loop(db2, trees2, data_file, rx, &syncs2))
            .map_err(|e| StoreError::Io(format!("spawn committer: {e}")))?;
        Ok(Arc::new(Store { db, trees, shards, commits: Some(tx), committer: Some(committer), syncs }))
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The metadata group's id: the one past the last shard, which no key ever hashes to. Every group id
    /// (the shards' and this one) indexes a state-machine tree of the store.
    pub fn meta_group(&self) -> ShardId {
        self.shards
    }

    fn tree(&self, shard: ShardId) -> &sled::Tree {
        &self.trees[shard as usize]
    }

    /// The shard's state-machine tree, for another log engine to read directly and write through
    /// [`Store::submit`].
    pub(crate) fn shard_tree(&self, shard: ShardId) -> sled::Tree {
        self.tree(shard).clone()
    }

    /// Opens (or creates) a tree beside the shards' trees. Creating one writes sled's metadata, so it
    /// happens on the committer thread like every other write.
    pub(crate) fn open_tree(&self, name: String) -> impl Future<Output = Result<sled::Tree, StoreError>> {
        let db = self.db.clone();
        self.run(false, move || db.open_tree(name).map_err(StoreError::from))
    }

    /// Queues `work` on the committer thread behind everything submitted before it. With `durable`, its
    /// completion runs after the group's `flush` + `fdatasync`; without, right after the work, since
    /// writes that can be rebuilt from a durable log need not wait for a sync of their own (they become
    /// durable with the next group that syncs, and sled keeps them in order).
    pub(crate) fn submit(
        &self,
        durable: bool,
        work: impl FnOnce() -> Completion + Send + 'static,
    ) -> Result<(), StoreError> {
        let task = Job::Task(Task { work: Box::new(work), durable });
        match &self.commits {
            Some(commits) => commits.send(task).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// [`Store::submit`] for work whose result the caller awaits.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        durable: bool,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let submitted = self.submit(durable, move || {
            let result = work();
            Box::new(move |synced: Result<(), StoreError>| {
                // The waiter may have gone; the work is done all the same.
                let _ = tx.send(synced.and(result));
            })
        });
        async move {
            submitted?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// The encoded record under `key`, for a reader that knows more than one format of it.
    pub fn get_raw(&self, shard: ShardId, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(shard).get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn get<T: DeserializeOwned>(&self, shard: ShardId, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree(shard).get(key.as_bytes())? {
            Some(bytes) => Ok(Some(codec::decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Records under `prefix`, in descending key order, starting below `before` when given.
    pub fn scan_desc<T: DeserializeOwned>(
        &self,
        shard: ShardId,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let start = prefix.as_bytes().to_vec();
        let end = match before {
            Some(b) => format!("{prefix}{b}").into_bytes(),
            None => prefix_end(prefix.as_bytes()),
        };
        let mut out = vec![];
        for kv in self.tree(shard).range(start..end).rev() {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), codec::decode(&k, &v)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every record under `prefix`, in ascending key order.
    pub fn scan_all<T: DeserializeOwned>(&self, shard: ShardId, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.tree(shard)
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), codec::decode(&k, &v)?))
            })
            .collect()
    }

    /// The index of the last entry applied to the shard's state machine.
    pub fn applied_index(&self, shard: ShardId) -> Result<LogIndex, StoreError> {
        Ok(read_counter(self.tree(shard).get(APPLIED_KEY)?.as_deref()))
    }

    /// How many group commits (`flush` + `fdatasync`) the committer has made since the store opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Size of the store on disk, for the metrics.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Ties the store to the node `name` on first use; refuses a store another node made, so that a
    /// data directory copied or mounted on the wrong node cannot vote in groups under a false name.
    pub async fn claim(&self, name: &str) -> Result<(), StoreError> {
        let (db, name) = (self.db.clone(), name.to_owned());
        self.run(true, move || match db.get(NODE_KEY)? {
            Some(owner) if owner.as_ref() != name.as_bytes() => Err(StoreError::Io(format!(
                "the data directory belongs to another node, {:?}, not {name:?}",
                String::from_utf8_lossy(&owner)
            ))),
            Some(_) => Ok(()),
            None => {
                db.insert(NODE_KEY, name.as_bytes())?;
                Ok(())
            }
        })
        .await
    }

    /// Whether this node has ever known a cluster metadata record: from then on its groups only ever
    /// change by membership changes, never by a bootstrap from the seed list again.
    pub fn knows_cluster(&self) -> Result<bool, StoreError> {
        Ok(self.db.get(KNOWS_CLUSTER_KEY)?.is_some())
    }

    /// Records durably that this node knows a cluster metadata record ([`Store::knows_cluster`]).
    pub async fn set_knows_cluster(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        self.run(true, move || {
            db.insert(KNOWS_CLUSTER_KEY, b"1")?;
            Ok(())
        })
        .await
    }

    /// Whether the raft group `shard` has left anything in this store (a vote, log entries, a snapshot).
    pub fn has_group_state(&self, shard: ShardId) -> Result<bool, StoreError> {
        let name = group_log_tree(shard);
        if !self.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
            return Ok(false);
        }
        Ok(!self.db.open_tree(name)?.is_empty())
    }

    /// Erases group `shard` from this store, its raft log and its state machine, durably: what a replica
    /// leaves behind once it is no longer one. A later replica here starts empty and catches up from the
    /// leader.
    pub async fn wipe_group(&self, shard: ShardId) -> Result<(), StoreError> {
        let (db, data) = (self.db.clone(), self.tree(shard).clone());
        self.run(true, move || {
            db.open_tree(group_log_tree(shard))?.clear()?;
            data.clear()?;
            Ok(())
        })
        .await
    }
}

/// Makes the store's directory owner-only (0700) and every file in it 0600, as a store written before
/// the process created its files owner-only may have left them: the store holds password hashes and
/// session verifiers. Its parent, the node's data directory, goes 0700 too where this process may change
/// it (a volume's mount point may belong to someone else, and then it stays as it is).
fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path) -> std::io::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path())?;
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(())
    }
    walk(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %parent.display(), error = %e, "the data directory stays as it is");
        }
    }
    Ok(())
}

/// The tree of group `shard`'s raft log, vote and snapshot.
pub(crate) fn group_log_tree(shard: ShardId) -> String {
    format!("raft-log-{shard}")
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Prefixes here are ASCII ending in '/', so bumping the last byte never overflows.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn commit_loop(db: sled::Db, trees: Vec<sled::Tree>, data_file: File, rx: mpsc::Receiver<Job>, syncs: &AtomicU64) {
    let sync = || {
        let synced = db
            .flush()
            .map_err(StoreError::from)
            .and_then(|_| data_file.sync_data().map_err(|e| StoreError::Io(format!("fdatasync: {e}"))));
        syncs.fetch_add(1, Ordering::Relaxed);
        synced
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut entries = Vec::with_capacity(batch.len());
        let mut waiting: Vec<Completion> = vec![];
        for job in batch {
            match job {
                Job::Entry(req) => {
                    let applied = apply(&trees[req.shard as usize], &req.entry);
                    entries.push((req, applied));
                }
                Job::Task(task) => {
                    let done = (task.work)();
                    if task.durable {
                        waiting.push(done);
                    } else {
                        done(Ok(()));
                    }
                }
            }
        }
        if entries.is_empty() && waiting.is_empty() {
            continue;
        }
        let durable = sync();
        metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::BATCH_ENTRIES.observe((entries.len() + waiting.len()) as f64);
        let outcome = if durable.is_ok() { "ok" } else { "error" };
        metrics::COMMITS.with_label_values(&[outcome]).inc();
        if let Err(e) = &durable {
            tracing::error!(error = %e, entries = entries.len(), tasks = waiting.len(), "group commit is not durable");
        }
        for (req, result) in entries {
            let result = match (&durable, result) {
                (Ok(()), r) => r,
                (Err(e), _) => Err(e.clone()),
            };
            metrics::WRITE_SECONDS.observe(req.submitted.elapsed().as_secs_f64());
            // The caller may have timed out and gone; its entry is durable all the same.
            let _ = req.reply.send(result);
        }
        for done in waiting {
            done(durable.clone());
        }
    }
    // Writes that did not ask for a sync of their own (state-machine applies) still reach the disk on a
    // clean shutdown, so a restart need not replay them.
    if let Err(e) = sync() {
        tracing::error!(error = %e, "final flush of the store failed");
    }
}

fn apply(tree: &sled::Tree, entry: &LogEntry) -> Result<LogIndex, StoreError> {
    let index = read_counter(tree.get(APPLIED_KEY)?.as_deref()) + 1;
    let mut batch = sled::Batch::default();
    stage(&mut batch, entry);
    batch.insert(APPLIED_KEY, &index.to_le_bytes());
    tree.apply_batch(batch)?;
    Ok(index)
}

/// The single-replica [`ShardLog`]: entries are durable on this node's disk when acknowledged.
pub struct LocalLog {
    store: Arc<Store>,
    /// This node's name, the leader of every shard.
    node: String,
}

impl LocalLog {
    pub fn new(store: Arc<Store>, node: impl Into<String>) -> Self {
        Self { store, node: node.into() }
    }
}

impl ShardLog for LocalLog {
    fn append(&self, shard: ShardId, entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let request = CommitRequest { shard, entry, submitted: Instant::now(), reply };
        let sent = match &self.store.commits {
            Some(commits) => commits.send(Job::Entry(request)).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// A single-replica log has one leadership that never changes: this node's, in term 1.
    fn leadership(&self, _shard: ShardId) -> Leadership {
        Leadership { term: 1, is_leader: true, leader: Some(self.node.clone()) }
    }

    fn status(&self, shard: ShardId) -> Option<ShardStatus> {
        Some(ShardStatus {
            shard,
            replicas: vec![self.node.clone()],
            leader: Some(self.node.clone()),
            term: 1,
            commit_index: self.store.applied_index(shard).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_applied_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), 4).expect("open");
            let log = LocalLog::new(store.clone(), "node-1");
            let mut e = LogEntry::default();
            e.put("o/1", &"one".to_owned()).put("o/2", &"two".to_owned());
            assert_eq!(log.append(1, e).await.expect("append"), 1);
            let mut e = LogEntry::default();
            e.delete("o/1").put("o/3", &"three".to_owned());
            assert_eq!(log.append(1, e).await.expect("append"), 2);
            assert_eq!(store.applied_index(1).expect("index"), 2);
            assert_eq!(store.applied_index(0).expect("index"), 0);
        }
        let store = Store::open(dir.path(), 4).expect("reopen");
        assert_eq!(store.get::<String>(1, "o/1").expect("get"), None);
        let desc: Vec<String> =
            store.scan_desc::<String>(1, "o/", None, 10).expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(desc, vec!["3", "2"]);
        let below: Vec<String> =
            store.scan_desc::<String>(1, "o/", Some("3"), 10).expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(below, vec!["2"]);
        assert_eq!(store.applied_index(1).expect("index"), 2);
    }

    #[tokio::test]
    async fn concurrent_writers_share_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 2).expect("open");
        let log = Arc::new(LocalLog::new(store.clone(), "node-1"));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut e = LogEntry::default();
                    e.put(format!("k/{i:04}"), &i);
                    log.append(i % 2, e).await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("append");
        }
        assert_eq!(
            store.scan_all::<u32>(0, "k/").expect("scan").len() + store.scan_all::<u32>(1, "k/").expect("scan").len(),
            200
        );
        assert_eq!(store.applied_index(0).expect("index") + store.applied_index(1).expect("index"), 200);
    }

    #[tokio::test]
    async fn durable_tasks_complete_after_a_sync_and_run_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1).expect("open");
        let tree = store.open_tree("extra".into()).await.expect("tree");
        let before = store.syncs();
        let t = tree.clone();
        store.run(true, move || t.insert("a", "1").map(drop).map_err(StoreError::from)).await.expect("run");
        assert!(store.syncs() > before, "a durable task is acknowledged after a sync");
        let t = tree.clone();
        let order = store.run(false, move || Ok(t.get("a")?.map(|v| v.to_vec()))).await.expect("run");
        assert_eq!(order, Some(b"1".to_vec()));
        let failed = store.run(true, || Err::<(), _>(StoreError::Io("boom".into()))).await;
        assert!(matches!(failed, Err(StoreError::Io(_))));
    }

    #[test]
    fn the_shard_count_is_fixed_at_bootstrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path(), 4).expect("open"));
        let err = Store::open(dir.path(), 8).err().expect("must refuse");
        assert!(err.to_string().contains("fixed at bootstrap"), "{err}");
    }
}
