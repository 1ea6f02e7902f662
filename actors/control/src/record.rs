//! The cluster's metadata: its members and where each shard's replicas are, as one versioned record
//! ([`ClusterMeta`]) kept by the metadata group, so that placement is data every process can read rather
//! than only what each computes from its own configuration.
//!
//! - The metadata group is one more raft group, id `shard_count` (no key hashes to it), replicated on
//!   `placement(shard_count, members, min(3, n))` over the store's `meta` tree (`shardlog::RaftLog`). A one-node
//!   cluster has a one-member group; with the local log engine the tree is written by `LocalLog`.
//! - Its record lives under [`META_KEY`], encoded like every record (`codec`: version byte + bincode), and
//!   is written with an ordinary `LogEntry`.
//! - Bootstrap ([`bootstrap`]): once the group has a leader, that leader writes the initial record,
//!   computed from `cluster.seeds` and `placement()`, if and only if none exists. Only the leader writes,
//!   after a read barrier, and only if it is still leader in the term it checked in, so bootstraps that
//!   race on several nodes produce one record, and a retry after a failure is harmless.
//! - Readers: the keeper (`crate::keeper`) offers the newest record it can find to the placement cache:
//!   the local replica's copy on a node, else a member's answer to `Request::Meta`. Until a record is
//!   known, routing uses the placement computed from the seeds.

use playground_proto::{ClusterMeta, ControlError, LogEntry, MemberRecord, MetaAnswer, META_KEY};
use shardlog::{ShardLog, Store, StoreError};

use crate::handle::ControlHandle;

/// The record as this node's replica of the metadata group has applied it.
pub fn read(store: &Store) -> Result<Option<ClusterMeta>, StoreError> {
    match store.get_raw(store.meta_group(), META_KEY)? {
        Some(bytes) => Ok(Some(ClusterMeta::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// What [`bootstrap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrapped {
    /// This call wrote the record.
    Written(ClusterMeta),
    /// A record existed already; it is left as it is.
    Found(ClusterMeta),
}

impl Bootstrapped {
    pub fn record(&self) -> &ClusterMeta {
        match self {
            Bootstrapped::Written(m) | Bootstrapped::Found(m) => m,
        }
    }
}

/// Writes `initial` as the cluster's record if and only if there is none; [`StoreError::NotLeader`] on a
/// node that does not lead the metadata group. Safe to retry and to race: only the leader writes, after a
/// read barrier (so it has applied every record committed before), and only while it still leads in
/// the term it checked in (a leader deposed and re-elected meanwhile may have missed a record written by
/// the leader in between, so it checks again instead). One process must not run two at once; the keeper
/// is the only caller.
pub async fn bootstrap(log: &dyn ShardLog, store: &Store, initial: &ClusterMeta) -> Result<Bootstrapped, StoreError> {
    let group = store.meta_group();
    let checked = log.leadership(group);
    if !checked.is_leader {
        return Err(StoreError::NotLeader { shard: group, leader: checked.leader });
    }
    log.read_barrier(group).await?;
    if let Some(found) = read(store)? {
        return Ok(Bootstrapped::Found(found));
    }
    let now = log.leadership(group);
    if !now.is_leader || now.term != checked.term {
        return Err(StoreError::NotLeader { shard: group, leader: now.leader });
    }
    let mut entry = LogEntry::default();
    entry.put(META_KEY, initial);
    log.append(group, entry).await?;
    tracing::info!(version = initial.version, members = initial.members.len(), "cluster metadata bootstrapped");
    Ok(Bootstrapped::Written(initial.clone()))
}

/// Changes the cluster's record on the metadata group's leader: `change` gets the current record and
/// says whether it changed it; a change is written with the version bumped by one. Like [`bootstrap`],
/// only the leader writes, after a read barrier, and only while it still leads in the term it checked in;
/// callers on one node take turns (the placement driver holds a lock around it), so no change is lost.
/// Returns the record as it stands afterwards.
pub async fn update(
    log: &dyn ShardLog,
    store: &Store,
    change: impl FnOnce(&mut ClusterMeta) -> bool,
) -> Result<ClusterMeta, StoreError> {
    let group = store.meta_group();
    let checked = log.leadership(group);
    if !checked.is_leader {
        return Err(StoreError::NotLeader { shard: group, leader: checked.leader });
    }
    log.read_barrier(group).await?;
    let Some(mut record) = read(store)? else {
        return Err(StoreError::NotLeader { shard: group, leader: None });
    };
    if !change(&mut record) {
        return Ok(record);
    }
    record.version += 1;
    let now = log.leadership(group);
    if !now.is_leader || now.term != checked.term {
        return Err(StoreError::NotLeader { shard: group, leader: now.leader });
    }
    let mut entry = LogEntry::default();
    entry.put(META_KEY, &record);
    log.append(group, entry).await?;
    tracing::info!(version = record.version, members = record.members.len(), "cluster metadata changed");
    Ok(record)
}

/// The newest record this node can answer `Request::Meta` with: its replica's copy or what it learned.
pub fn answer(control: &ControlHandle) -> MetaAnswer {
    let local = control.local.as_ref().and_then(|l| read(&l.store).ok().flatten());
    let learned = control.cache.meta().map(|m| m.as_ref().clone());
    match (local, learned) {
        (Some(a), Some(b)) => Ok(if b.version > a.version { b } else { a }),
        (Some(m), None) | (None, Some(m)) => Ok(m),
        (None, None) => Err(ControlError::Unavailable("no cluster metadata yet".into())),
    }
}

/// The members a process starts with: the seeds, or this node alone.
pub fn seed_members(config: &cluster_config::Config) -> Vec<MemberRecord> {
    let seeds: Vec<MemberRecord> =
        config.cluster.seed_list().into_iter().map(|s| MemberRecord { id: s.id, addr: s.addr.to_string() }).collect();
    if seeds.is_empty() {
        vec![MemberRecord { id: config.node.id.clone(), addr: config.cluster.listen.to_string() }]
    } else {
        seeds
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use playground_proto::{LogIndex, ShardId};
    use shardlog::{Leadership, LocalLog};

    use super::*;

    fn members(ids: &[&str]) -> Vec<MemberRecord> {
        ids.iter().map(|id| MemberRecord { id: (*id).to_owned(), addr: format!("127.0.0.1:7{}", id.len()) }).collect()
    }

    #[tokio::test]
    async fn bootstrap_writes_once_and_later_calls_find_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ClusterMeta::initial(4, 3, members(&["a"]));
        {
            let store = Store::open(dir.path(), 4).expect("open");
            let log = LocalLog::new(store.clone(), "a");
            assert_eq!(read(&store).expect("read"), None);
            let done = bootstrap(&log, &store, &first).await.expect("bootstrap");
            assert_eq!(done, Bootstrapped::Written(first.clone()));
            // A retry, or a racing bootstrap with other inputs, leaves the record as it is.
            let other = ClusterMeta::initial(4, 3, members(&["a", "z"]));
            assert_eq!(bootstrap(&log, &store, &other).await.expect("again"), Bootstrapped::Found(first.clone()));
            assert_eq!(store.applied_index(store.meta_group()).expect("index"), 1, "one entry ever written");
            for shard in 0..4 {
                assert_eq!(store.applied_index(shard).expect("index"), 0, "shard {shard} untouched");
            }
        }
        let store = Store::open(dir.path(), 4).expect("reopen");
        assert_eq!(read(&store).expect("read"), Some(first));
    }

    /// A log on a node that follows the metadata group: nothing may be appended through it.
    struct Follower;

    impl ShardLog for Follower {
        fn append(&self, _shard: ShardId, _entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>> {
            panic!("a follower must not be asked to append")
        }

        fn leadership(&self, _shard: ShardId) -> Leadership {
            Leadership { term: 3, is_leader: false, leader: Some("b".into()) }
        }
    }

    #[tokio::test]
    async fn only_the_leader_bootstraps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 2).expect("open");
        let initial = ClusterMeta::initial(2, 3, members(&["a", "b"]));
        let err = bootstrap(&Follower, &store, &initial).await.expect_err("not the leader");
        assert!(matches!(err, StoreError::NotLeader { shard: 2, leader: Some(ref l) } if l == "b"), "{err:?}");
        assert_eq!(read(&store).expect("read"), None);
    }
}
