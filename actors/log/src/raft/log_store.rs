//! A shard's raft log and vote in sled, tree `raft-log-{n}`.
//!
//! | key | value |
//! |---|---|
//! | `l` + index (u64 big-endian) | `Entry`: log id and payload |
//! | `m/vote` | the last vote this node cast or holds |
//! | `m/committed` | the last committed log id known (a hint: losing it only costs a re-apply) |
//! | `m/purged` | the last purged log id |
//! | `m/snapshot-meta`, `m/snapshot-data` | the current snapshot (written by the state machine) |
//!
//! Every value except the snapshot data is one version byte + bincode (`playground_proto::codec`). Big-endian
//! indices make sled's key order the log's order. Every write runs on the store's committer thread;
//! appends, votes and truncations are acknowledged after its `flush` + `fdatasync`.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;

use playground_proto::{codec, NodeId};

use super::{Alive, TypeConfig};
use crate::error::StoreError;
use crate::store::{Completion, Store};

const LOG_PREFIX: u8 = b'l';
const VOTE_KEY: &[u8] = b"m/vote";
const COMMITTED_KEY: &[u8] = b"m/committed";
const PURGED_KEY: &[u8] = b"m/purged";

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [LOG_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn read<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(key, &bytes)?)),
        None => Ok(None),
    }
}

fn first_index(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

/// Reads the log; cloned for openraft's replication tasks, which read while the log store writes.
#[derive(Clone)]
pub(crate) struct LogReader {
    tree: sled::Tree,
    _alive: Alive,
}

impl LogReader {
    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let mut out = vec![];
        for kv in self.tree.range(log_key(first_index(&range))..) {
            let (key, value) = kv?;
            let index = match key.split_first() {
                Some((&LOG_PREFIX, rest)) if rest.len() == 8 => {
                    u64::from_be_bytes(rest.try_into().expect("the length was checked"))
                }
                _ => break,
            };
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&key, &value)?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        match self.tree.scan_prefix([LOG_PREFIX]).next_back() {
            Some(kv) => {
                let (key, value) = kv?;
                Ok(Some(codec::decode(&key, &value)?))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.entries(range).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

/// The log storage openraft owns, one per group.
pub(crate) struct LogStore {
    store: Arc<Store>,
    reader: LogReader,
}

impl LogStore {
    pub(crate) fn new(store: Arc<Store>, tree: sled::Tree, alive: Alive) -> Self {
        Self { store, reader: LogReader { tree, _alive: alive } }
    }

    fn tree(&self) -> sled::Tree {
        self.reader.tree.clone()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read_err = |e: StoreError| StorageError::from(StorageIOError::read_logs(&e));
        let last_purged_log_id: Option<LogId<NodeId>> = read(&self.reader.tree, PURGED_KEY).map_err(read_err)?;
        let last = self.reader.last_entry().map_err(read_err)?.map(|e| e.log_id);
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let (tree, value) = (self.tree(), codec::encode(vote));
        self.store
            .run(true, move || tree.insert(VOTE_KEY, value).map(drop).map_err(StoreError::from))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read(&self.reader.tree, VOTE_KEY).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Only a hint for re-applying after a restart, so it neither waits for a sync nor holds up
        // openraft's core while the committer is busy; the committer keeps it in order with the rest.
        let (tree, value) = (self.tree(), codec::encode(&committed));
        self.store
            .submit(false, move || {
                let written = tree.insert(COMMITTED_KEY, value).map(drop);
                Box::new(move |_: Result<(), StoreError>| {
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "cannot record the committed log id");
                    }
                }) as Completion
            })
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> =
            read(&self.reader.tree, COMMITTED_KEY).map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    /// Returns once the entries are queued; openraft learns they are durable through `callback`, which
    /// the committer calls after the group's `flush` + `fdatasync`.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&log_key(entry.log_id.index), codec::encode(&entry));
        }
        let tree = self.tree();
        self.store
            .submit(true, move || {
                let written = tree.apply_batch(batch).map_err(StoreError::from);
                Box::new(move |synced: Result<(), StoreError>| {
                    let outcome = synced.and(written).map_err(|e| io::Error::other(e.to_string()));
                    callback.log_io_completed(outcome);
                }) as Completion
            })
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let tree = self.tree();
        self.store
            .run(true, move || {
                let mut batch = sled::Batch::default();
                for kv in tree.range(log_key(log_id.index)..=log_key(u64::MAX)) {
                    batch.remove(kv?.0);
                }
                tree.apply_batch(batch).map_err(StoreError::from)
            })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Records the purge point and removes the entries up to it in one batch, so a crash leaves either
    /// both or neither.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let tree = self.tree();
        self.store
            .run(false, move || {
                let mut batch = sled::Batch::default();
                batch.insert(PURGED_KEY, codec::encode(&log_id));
                for kv in tree.range(log_key(0)..=log_key(log_id.index)) {
                    batch.remove(kv?.0);
                }
                tree.apply_batch(batch).map_err(StoreError::from)
            })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_index_and_stay_below_meta_keys() {
        let mut keys = vec![log_key(256), log_key(1), log_key(u64::MAX), log_key(255)];
        keys.sort();
        assert_eq!(keys, vec![log_key(1), log_key(255), log_key(256), log_key(u64::MAX)]);
        assert!(log_key(u64::MAX).as_slice() < VOTE_KEY);
        assert!(log_key(u64::MAX).as_slice() < PURGED_KEY);
    }

    #[test]
    fn range_starts() {
        assert_eq!(first_index(&(3..7)), 3);
        assert_eq!(first_index(&(..7)), 0);
        assert_eq!(first_index(&(3..=7)), 3);
        assert_eq!(first_index(&(Bound::Excluded(3), Bound::Unbounded)), 4);
    }
}
