//! What a shard's log carries: an entity's changes as one [`LogEntry`], and the raft entry that packs
//! several of them. Both reach disk (the raft log stores them inside versioned records), so their shape
//! is part of the on-disk format: never edited in place.

use serde::{Deserialize, Serialize};

use crate::codec;

/// Position of an entry in a shard's log.
pub type LogIndex = u64;

/// One change to a shard's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// What an entity's command becomes: the changes it makes, applied all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub writes: Vec<Write>,
}

impl LogEntry {
    /// Stores `value` under `key`, encoded as a record (version byte + bincode).
    pub fn put<T: Serialize>(&mut self, key: impl Into<String>, value: &T) -> &mut Self {
        self.writes.push(Write::Put { key: key.into(), value: codec::encode(value) });
        self
    }

    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.writes.push(Write::Delete { key: key.into() });
        self
    }
}

/// What one raft entry of a shard carries: the log entries its proposer packed, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    pub entries: Vec<LogEntry>,
}

/// The state machine's answer to one raft entry: the shard log index of its first packed entry; the
/// others follow one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub first: LogIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout written before `Write` had its name: the raft logs on disk hold entries of this shape.
    #[derive(Serialize)]
    enum FirstOp {
        Put { key: String, value: Vec<u8> },
        Delete { key: String },
    }

    #[derive(Serialize)]
    struct FirstEntry {
        ops: Vec<FirstOp>,
    }

    #[test]
    fn entries_keep_the_layout_on_disk() {
        let mut entry = LogEntry::default();
        entry.put("u/1", &7u64).delete("s/1/2");
        let first = FirstEntry {
            ops: vec![
                FirstOp::Put { key: "u/1".into(), value: codec::encode(&7u64) },
                FirstOp::Delete { key: "s/1/2".into() },
            ],
        };
        let packed = Packed { entries: vec![entry] };
        let bytes = codec::encode(&packed);
        assert_eq!(bytes, codec::encode(&vec![first]), "a rename changes nothing on disk");
        assert_eq!(codec::decode::<Packed>(b"l", &bytes).expect("decodes"), packed);
    }
}
