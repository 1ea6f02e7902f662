//! The cluster's metadata: its members and where each shard's replicas are, as one versioned record
//! ([`ClusterMeta`]) kept by the metadata group, so that placement is data every process can read rather
//! than only what each computes from its own configuration.
//!
//! - The metadata group is one more raft group, id `shard_count` (no key hashes to it), replicated on
//!   `placement(shard_count, members, min(3, n))` over the store's `meta` tree (`crate::raft`). A one-node
//!   cluster has a one-member group; with the local log engine the tree is written by `LocalLog`.
//! - Its record lives under [`META_KEY`], encoded like every record (`codec`: version byte + bincode), and
//!   is written with an ordinary `LogEntry`.
//! - Bootstrap ([`bootstrap`]): once the group has a leader, that leader writes the initial record,
//!   computed from `cluster.seeds` and `placement()`, if and only if none exists. Only the leader writes,
//!   after a read barrier, and only if it is still leader in the term it checked in, so bootstraps that
//!   race on several nodes produce one record, and a retry after a failure is harmless.
//! - Readers: [`refresh`] offers the newest record it can find to the [`Router`]: the local replica's
//!   copy on a node, else the answer of a node to [`Request::Meta`](crate::protocol::Request::Meta). The
//!   keeper task ([`spawn_keeper`]) refreshes every few seconds, and soon after a call found no leader
//!   among a shard's replicas. Until a record is known, routing uses the placement computed from the seeds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::cluster::Router;
use crate::codec;
use crate::error::{ApiError, StoreError};
use crate::protocol::Request;
use crate::raft::placement;
use crate::store::{LogEntry, ShardLog, Store};

/// The key of the one record in the metadata group's tree.
pub const META_KEY: &str = "cluster";

/// How often the keeper looks again once a record is known: often enough that gateways and nodes learn a
/// new member or a moved replica within about a second (routing follows leader hints in between).
const REFRESH: Duration = Duration::from_secs(1);
/// How often it looks while no record is known yet (bootstrap under way).
const REFRESH_UNKNOWN: Duration = Duration::from_millis(250);
/// Bound on one `Request::Meta` round trip.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The node's name (`node.id`).
    pub id: String,
    /// Its cluster transport address (`cluster.listen`).
    pub addr: String,
}

/// Members and shard placement, one record, bumped by one on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// 1 for the bootstrap record; every change adds one, so readers keep the highest they have seen.
    pub version: u64,
    pub shard_count: u32,
    /// The effective factor: at most the number of members.
    pub replication_factor: u32,
    /// Sorted by id.
    pub members: Vec<MemberRecord>,
    /// The replicas of each shard, preferred leader first; one list per shard.
    pub placement: Vec<Vec<String>>,
    /// Members being drained, sorted: they take no new replicas and give away what they hold, and leave
    /// the members once they hold nothing.
    pub draining: Vec<String>,
}

/// The record as the first format wrote it (before draining existed), read by [`ClusterMeta::decode`].
#[derive(Deserialize)]
struct ClusterMetaV1 {
    version: u64,
    shard_count: u32,
    replication_factor: u32,
    members: Vec<MemberRecord>,
    placement: Vec<Vec<String>>,
}

impl ClusterMeta {
    /// The bootstrap record: version 1, `members` sorted and without duplicate ids, and each shard placed
    /// as `crate::raft` placed the shard groups, so the record describes the groups that exist.
    pub fn initial(shard_count: u32, replication_factor: usize, mut members: Vec<MemberRecord>) -> Self {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let rf = replication_factor.clamp(1, ids.len().max(1));
        let placement = (0..shard_count).map(|shard| placement(shard, &ids, rf)).collect();
        ClusterMeta { version: 1, shard_count, replication_factor: rf as u32, members, placement, draining: vec![] }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads the record in the current format, or in the first one (a record written before draining
    /// existed: nothing drains).
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        codec::decode(META_KEY.as_bytes(), bytes).or_else(|e| {
            let v1: ClusterMetaV1 = codec::decode(META_KEY.as_bytes(), bytes).map_err(|_| e)?;
            Ok(ClusterMeta {
                version: v1.version,
                shard_count: v1.shard_count,
                replication_factor: v1.replication_factor,
                members: v1.members,
                placement: v1.placement,
                draining: vec![],
            })
        })
    }

    /// The members that may hold replicas: all but the draining ones.
    pub fn hosts(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).filter(|id| !self.draining.contains(id)).collect()
    }

    /// Whether the record can describe a cluster of `shard_count` shards: a record from elsewhere that
    /// does not is ignored rather than routed by.
    pub fn fits(&self, shard_count: u32) -> bool {
        self.shard_count == shard_count && self.placement.len() == shard_count as usize
    }
}

/// The answer to [`Request::Meta`](crate::protocol::Request::Meta): the newest record the node has, or
/// `Unavailable` while it has none.
pub type MetaAnswer = Result<ClusterMeta, ApiError>;

/// The record as this node's replica of the metadata group has applied it.
pub fn read(store: &Store) -> Result<Option<ClusterMeta>, StoreError> {
    match store.get_raw(store.meta_group(), META_KEY)? {
        Some(bytes) => ClusterMeta::decode(&bytes).map(Some),
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

/// The newest record this node can answer [`Request::Meta`] with: its replica's copy or what it learned.
pub fn answer(router: &Router) -> MetaAnswer {
    let local = router.local.as_ref().and_then(|l| read(&l.store).ok().flatten());
    let learned = router.meta().map(|m| m.as_ref().clone());
    match (local, learned) {
        (Some(a), Some(b)) => Ok(if b.version > a.version { b } else { a }),
        (Some(m), None) | (None, Some(m)) => Ok(m),
        (None, None) => Err(ApiError::Unavailable("no cluster metadata yet".into())),
    }
}

/// One round of looking for the record: the local replica's copy (a node), bootstrapping it when this
/// node leads the metadata group and `initial` is given, else a node's answer. Offers what it finds to
/// the router, which keeps the newest; returns whether a record is known afterwards.
pub async fn refresh(router: &Router, initial: Option<&ClusterMeta>) -> bool {
    if let Some(local) = &router.local {
        match read(&local.store) {
            Ok(Some(m)) => {
                router.offer_meta(m);
                return true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cluster metadata unreadable"),
        }
        let group = local.store.meta_group();
        if let Some(initial) = initial.filter(|_| local.log.leadership(group).is_leader) {
            match bootstrap(local.log.as_ref(), &local.store, initial).await {
                Ok(done) => {
                    router.offer_meta(done.record().clone());
                    return true;
                }
                Err(e) => tracing::debug!(error = %e, "cluster metadata bootstrap to be retried"),
            }
        }
    }
    ask(router).await;
    router.meta().is_some()
}

/// Asks the nodes for their record, the metadata group's leader first when this node knows it, until one
/// answers.
async fn ask(router: &Router) {
    let Some(remote) = &router.remote else { return };
    let mut candidates: Vec<String> = vec![];
    if let Some(local) = &router.local {
        candidates.extend(local.log.leadership(local.store.meta_group()).leader.filter(|l| *l != router.me));
    }
    if let Some(meta) = router.meta() {
        candidates.extend(meta.members.iter().map(|m| m.id.clone()));
    }
    let mut peers: Vec<_> = remote.peers().into_iter().filter(|p| p.state != "down").map(|p| p.id).collect();
    peers.sort();
    candidates.extend(peers);
    let mut asked: Vec<String> = vec![];
    for node in candidates {
        if node == router.me || asked.contains(&node) {
            continue;
        }
        asked.push(node.clone());
        let Ok(bytes) = remote.call(&node, codec::encode(&Request::Meta), ASK_TIMEOUT).await else { continue };
        if let Ok(Ok(meta)) = codec::decode::<MetaAnswer>(b"meta", &bytes) {
            router.offer_meta(meta);
            return;
        }
    }
}

/// Keeps the router's record fresh until aborted: every [`REFRESH`] once known (every
/// [`REFRESH_UNKNOWN`] before), and soon after a call ran out of replicas to try (the placement it
/// routed by may be out of date). Every member of the record becomes a transport peer, and a node
/// remembers durably that it has known a record.
pub fn spawn_keeper(router: Arc<Router>, initial: Option<ClusterMeta>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut remembered = false;
        loop {
            let known = refresh(&router, initial.as_ref()).await;
            if let Some(record) = router.meta() {
                // Members that joined after this process started: keep sessions to them too.
                if let Some(remote) = &router.remote {
                    for m in record.members.iter().filter(|m| m.id != router.me) {
                        remote.add_peer(&m.id, &m.addr);
                    }
                }
                if let (Some(local), false) = (&router.local, remembered) {
                    // From now on this node's groups change only by membership changes (`RaftLog::start`).
                    remembered = local.store.set_knows_cluster().await.is_ok();
                }
            }
            let wait = if known { REFRESH } else { REFRESH_UNKNOWN };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = router.meta_stale.notified() => {
                    // A storm of NotLeader answers notifies many times; look at most this often.
                    tokio::time::sleep(REFRESH_UNKNOWN).await;
                }
            }
        }
    })
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

    use super::*;
    use crate::ids::ShardId;
    use crate::store::{Leadership, LocalLog, LogIndex};

    fn members(ids: &[&str]) -> Vec<MemberRecord> {
        ids.iter().map(|id| MemberRecord { id: (*id).to_owned(), addr: format!("127.0.0.1:7{}", id.len()) }).collect()
    }

    #[test]
    fn the_initial_record_places_shards_as_the_groups_are_placed() {
        let meta = ClusterMeta::initial(8, 3, members(&["n3", "n1", "n2", "n1", "n4"]));
        assert_eq!(meta.version, 1);
        let ids: Vec<&str> = meta.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["n1", "n2", "n3", "n4"], "sorted, one entry per id");
        assert_eq!(meta.replication_factor, 3);
        let names: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        for shard in 0..8 {
            assert_eq!(meta.placement[shard as usize], placement(shard, &names, 3), "shard {shard}");
        }
        assert!(meta.fits(8) && !meta.fits(16));
        let small = ClusterMeta::initial(4, 3, members(&["solo"]));
        assert_eq!(small.replication_factor, 1);
        assert!(small.placement.iter().all(|p| p == &vec!["solo".to_owned()]));
    }

    #[test]
    fn the_record_round_trips_with_a_version_byte() {
        let meta = ClusterMeta::initial(4, 3, members(&["a", "b", "c"]));
        let bytes = meta.encode();
        assert_eq!(bytes[0], codec::RECORD_V1);
        assert_eq!(ClusterMeta::decode(&bytes).expect("decodes"), meta);
        let mut bad = bytes.clone();
        bad[0] = 7;
        assert!(matches!(ClusterMeta::decode(&bad), Err(StoreError::Corrupt { .. })));
        assert!(ClusterMeta::decode(&bytes[..bytes.len() / 2]).is_err());
        // What `LogEntry::put` writes is what `read` decodes.
        let mut entry = LogEntry::default();
        entry.put(META_KEY, &meta);
        assert!(matches!(&entry.ops[0], crate::store::Op::Put { value, .. } if *value == bytes));
    }

    #[test]
    fn a_record_of_the_first_format_reads_with_nobody_draining() {
        #[derive(Serialize)]
        struct First {
            version: u64,
            shard_count: u32,
            replication_factor: u32,
            members: Vec<MemberRecord>,
            placement: Vec<Vec<String>>,
        }
        let now = ClusterMeta::initial(4, 3, members(&["a", "b", "c"]));
        let old = First {
            version: now.version,
            shard_count: now.shard_count,
            replication_factor: now.replication_factor,
            members: now.members.clone(),
            placement: now.placement.clone(),
        };
        assert_eq!(ClusterMeta::decode(&codec::encode(&old)).expect("the first format reads"), now);
        let mut draining = now.clone();
        draining.draining = vec!["b".into()];
        assert_eq!(ClusterMeta::decode(&draining.encode()).expect("decodes"), draining);
        assert_eq!(draining.hosts(), vec!["a".to_owned(), "c".to_owned()]);
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
