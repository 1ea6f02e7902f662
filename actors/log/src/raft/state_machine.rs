//! A shard's state machine: the shard's tree `shard-{n}`, the same one `LocalLog` writes, so that
//! `Store::get` and the scans serve entities whichever log is in use.
//!
//! Each packed `LogEntry` is applied as `LocalLog` applies it: its ops in order, and `\0meta/applied`
//! counts it, so every entry gets the next shard log index. Beside the data, in the same atomic sled
//! batch, the tree keeps:
//!
//! | key | value |
//! |---|---|
//! | `\0meta/raft/applied` | the last applied raft log id |
//! | `\0meta/raft/membership` | the last applied membership |
//!
//! so a restart resumes after the last applied entry and never applies one twice. Applies need no sync
//! of their own: if a crash loses one, openraft applies it again from the durable log, and the counter
//! and the raft log id roll back with the data, since all three are written in one batch.
//!
//! A snapshot is a dump of every other key of the tree (the counter included), with the raft log id and
//! membership in its meta. The current snapshot is kept in the raft log tree, so a restart after a purge
//! still has it.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::de::DeserializeOwned;

use playground_proto::{codec, Applied, NodeId, ShardId};

use super::{Alive, TypeConfig};
use crate::apply::{read_counter, stage, APPLIED_KEY};
use crate::error::StoreError;
use crate::store::Store;

const RAFT_APPLIED_KEY: &[u8] = b"\0meta/raft/applied";
const RAFT_MEMBERSHIP_KEY: &[u8] = b"\0meta/raft/membership";
const SNAPSHOT_META_KEY: &[u8] = b"m/snapshot-meta";
const SNAPSHOT_DATA_KEY: &[u8] = b"m/snapshot-data";

/// The version byte in front of snapshot data.
const SNAPSHOT_V1: u8 = 1;
/// A snapshot holds a whole shard, so it may far exceed a record's bound; beyond this it is corrupt.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

type Membership = StoredMembership<NodeId, openraft::BasicNode>;
type Dump = Vec<(Vec<u8>, Vec<u8>)>;

fn read<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(key, &bytes)?)),
        None => Ok(None),
    }
}

fn applied_counter(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(read_counter(tree.get(APPLIED_KEY)?.as_deref()))
}

fn encode_dump(dump: &Dump) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_V1];
    let body = bincode::serde::encode_to_vec(dump, bincode::config::standard())
        .expect("byte vectors encode infallibly into memory");
    out.extend_from_slice(&body);
    out
}

fn decode_dump(bytes: &[u8]) -> Result<Dump, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { key: "snapshot".into(), reason };
    match bytes.split_first() {
        Some((&SNAPSHOT_V1, body)) => {
            let config = bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>();
            bincode::serde::decode_from_slice(body, config).map(|(dump, _)| dump).map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown snapshot version {version}"))),
        None => Err(corrupt("empty snapshot".into())),
    }
}

/// The state machine openraft owns, one per group.
pub(crate) struct StateMachine {
    store: Arc<Store>,
    shard: ShardId,
    tree: sled::Tree,
    log_tree: sled::Tree,
    alive: Alive,
}

impl StateMachine {
    pub(crate) fn new(store: Arc<Store>, shard: ShardId, log_tree: sled::Tree, alive: Alive) -> Self {
        let tree = store.shard_tree(shard);
        Self { store, shard, tree, log_tree, alive }
    }

    fn applied(&self) -> Result<(Option<LogId<NodeId>>, Membership), StoreError> {
        let applied = read(&self.tree, RAFT_APPLIED_KEY)?;
        let membership = read(&self.tree, RAFT_MEMBERSHIP_KEY)?.unwrap_or_default();
        Ok((applied, membership))
    }
}

/// Applies `entries` to the shard's tree as one sled batch; runs on the committer thread.
fn apply_all(tree: &sled::Tree, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<Applied>, StoreError> {
    let mut counter = applied_counter(tree)?;
    let mut batch = sled::Batch::default();
    let mut replies = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        replies.push(Applied { first: counter + 1 });
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(packed) => {
                for log_entry in &packed.entries {
                    counter += 1;
                    stage(&mut batch, log_entry);
                }
            }
            EntryPayload::Membership(m) => {
                let stored: Membership = StoredMembership::new(Some(entry.log_id), m);
                batch.insert(RAFT_MEMBERSHIP_KEY, codec::encode(&stored));
            }
        }
        last = Some(entry.log_id);
    }
    if let Some(last) = last {
        batch.insert(APPLIED_KEY, &counter.to_le_bytes());
        batch.insert(RAFT_APPLIED_KEY, codec::encode(&last));
        tree.apply_batch(batch)?;
    }
    Ok(replies)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        self.applied().map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let tree = self.tree.clone();
        self.store
            .run(false, move || apply_all(&tree, entries))
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    /// Dumps the tree here, on the state machine's task, where no apply can run in between, so the
    /// snapshot is consistent with its log id.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let dump = (|| {
            let (last_applied, membership) = self.applied()?;
            let mut dump = vec![];
            for kv in self.tree.iter() {
                let (k, v) = kv?;
                if k.as_ref() != RAFT_APPLIED_KEY && k.as_ref() != RAFT_MEMBERSHIP_KEY {
                    dump.push((k.to_vec(), v.to_vec()));
                }
            }
            Ok((last_applied, membership, dump))
        })();
        SnapshotBuilder {
            store: self.store.clone(),
            shard: self.shard,
            log_tree: self.log_tree.clone(),
            dump,
            _alive: self.alive.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(vec![])))
    }

    /// Replaces the whole tree with the snapshot's keys in one atomic batch.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let write_err = |e: StoreError| StorageIOError::write_snapshot(Some(meta.signature()), &e).into();
        let data = snapshot.into_inner();
        let dump = decode_dump(&data).map_err(write_err)?;
        let (tree, log_tree) = (self.tree.clone(), self.log_tree.clone());
        let (applied, membership) =
            (meta.last_log_id.map(|id| codec::encode(&id)), codec::encode(&meta.last_membership));
        let meta_record = codec::encode(meta);
        self.store
            .run(true, move || {
                let mut batch = sled::Batch::default();
                for k in tree.iter().keys() {
                    batch.remove(k?);
                }
                for (k, v) in dump {
                    batch.insert(k, v);
                }
                if let Some(applied) = applied {
                    batch.insert(RAFT_APPLIED_KEY, applied);
                }
                batch.insert(RAFT_MEMBERSHIP_KEY, membership);
                tree.apply_batch(batch)?;
                keep_snapshot(&log_tree, meta_record, data)
            })
            .await
            .map_err(write_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let read_err = |e: StoreError| StorageError::from(StorageIOError::read_snapshot(None, &e));
        let meta = read(&self.log_tree, SNAPSHOT_META_KEY).map_err(read_err)?;
        let data = self.log_tree.get(SNAPSHOT_DATA_KEY).map_err(|e| read_err(e.into()))?;
        Ok(match (meta, data) {
            (Some(meta), Some(data)) => Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data.to_vec())) }),
            _ => None,
        })
    }
}

fn keep_snapshot(log_tree: &sled::Tree, meta: Vec<u8>, data: Vec<u8>) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    batch.insert(SNAPSHOT_META_KEY, meta);
    batch.insert(SNAPSHOT_DATA_KEY, data);
    log_tree.apply_batch(batch).map_err(StoreError::from)
}

/// Holds the dump taken by `get_snapshot_builder`; building encodes and keeps it.
pub(crate) struct SnapshotBuilder {
    store: Arc<Store>,
    shard: ShardId,
    log_tree: sled::Tree,
    dump: Result<(Option<LogId<NodeId>>, Membership, Dump), StoreError>,
    _alive: Alive,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (last_log_id, last_membership, dump) =
            std::mem::replace(&mut self.dump, Err(StoreError::Io("snapshot already built".into())))
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match &last_log_id {
            Some(id) => {
                format!("shard-{}-{}-{}-{}", self.shard, id.leader_id.term, id.index, playground_proto::now_millis())
            }
            None => format!("shard-{}-empty-{}", self.shard, playground_proto::now_millis()),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let data = encode_dump(&dump);
        let (log_tree, meta_record, kept) = (self.log_tree.clone(), codec::encode(&meta), data.clone());
        self.store
            .run(true, move || keep_snapshot(&log_tree, meta_record, kept))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, Membership as RaftMembership};
    use tokio::sync::mpsc;

    use super::*;
    use playground_proto::{LogEntry, Packed};

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn normal(index: u64, keys: &[&str]) -> Entry<TypeConfig> {
        let entries = keys
            .iter()
            .map(|k| {
                let mut e = LogEntry::default();
                e.put(*k, &k.to_string());
                e
            })
            .collect();
        Entry { log_id: log_id(index), payload: EntryPayload::Normal(Packed { entries }) }
    }

    async fn machine(store: &Arc<Store>, shard: ShardId, alive: &Alive) -> StateMachine {
        let log_tree = store.open_tree(format!("raft-log-{shard}")).await.expect("tree");
        StateMachine::new(store.clone(), shard, log_tree, alive.clone())
    }

    #[tokio::test]
    async fn a_snapshot_built_on_one_shard_installs_on_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 2).expect("open");
        let (tx, _rx) = mpsc::channel(1);
        let alive = Alive { _held: tx };
        let mut source = machine(&store, 0, &alive).await;
        let members = RaftMembership::new(vec![BTreeSet::from([1])], None);
        let replies = source
            .apply(vec![
                Entry { log_id: log_id(1), payload: EntryPayload::Membership(members) },
                Entry { log_id: log_id(2), payload: EntryPayload::Blank },
                normal(3, &["u/a", "u/b"]),
                normal(4, &["u/c"]),
            ])
            .await
            .expect("apply");
        assert_eq!(replies.iter().map(|r| r.first).collect::<Vec<_>>(), vec![1, 1, 1, 3]);
        let (applied, membership) = source.applied_state().await.expect("state");
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(membership.log_id(), &Some(log_id(1)));

        let snapshot = source.get_snapshot_builder().await.build_snapshot().await.expect("build");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(4)));
        let kept = source.get_current_snapshot().await.expect("read").expect("kept");
        assert_eq!(kept.meta, snapshot.meta);

        // The target has data of its own, which the snapshot replaces.
        let mut target = machine(&store, 1, &alive).await;
        target.apply(vec![normal(1, &["u/z"])]).await.expect("apply");
        target.install_snapshot(&snapshot.meta, snapshot.snapshot).await.expect("install");
        assert_eq!(store.get::<String>(1, "u/z").expect("get"), None);
        let keys: Vec<String> = store.scan_all::<String>(1, "u/").expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["a", "b", "c"]);
        assert_eq!(store.applied_index(1).expect("index"), 3);
        let (applied, membership) = target.applied_state().await.expect("state");
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(membership.log_id(), &Some(log_id(1)));
        let current = target.get_current_snapshot().await.expect("read").expect("kept");
        assert_eq!(current.meta, snapshot.meta);
        // Applying goes on from the snapshot's counter.
        let next = target.apply(vec![normal(5, &["u/d"])]).await.expect("apply");
        assert_eq!(next[0].first, 4);
    }

    #[test]
    fn dumps_round_trip_and_reject_unknown_versions() {
        let dump: Dump = vec![(b"u/1".to_vec(), vec![1, 2, 3]), (APPLIED_KEY.to_vec(), 7u64.to_le_bytes().to_vec())];
        let bytes = encode_dump(&dump);
        assert_eq!(decode_dump(&bytes).expect("decodes"), dump);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(decode_dump(&bad), Err(StoreError::Corrupt { .. })));
        assert!(decode_dump(&[]).is_err());
    }
}
