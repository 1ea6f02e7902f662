//! The one way a log entry changes a shard's state machine, shared by the local log (its committer applies
//! each entry as it is appended) and the raft state machine (which applies committed entries): both must
//! leave the same keys behind, since a shard may move between a local and a replicated history.

use playground_proto::{LogEntry, Write};

/// Number of log entries applied to a shard's state machine (u64, little-endian).
pub(crate) const APPLIED_KEY: &[u8] = b"\0meta/applied";

/// Adds the writes of `entry` to `batch`, which the caller applies atomically with the applied counter.
pub(crate) fn stage(batch: &mut sled::Batch, entry: &LogEntry) {
    for write in &entry.writes {
        match write {
            Write::Put { key, value } => batch.insert(key.as_bytes(), value.as_slice()),
            Write::Delete { key } => batch.remove(key.as_bytes()),
        }
    }
}

/// The applied counter as stored under [`APPLIED_KEY`] (0 for a tree never written).
pub(crate) fn read_counter(bytes: Option<&[u8]>) -> u64 {
    bytes.and_then(|v| v.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}
