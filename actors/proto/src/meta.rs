//! The cluster's metadata record: its members and where each shard's replicas are, one versioned record
//! kept by the metadata group (the control plane reads and writes it; every process routes by it).

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::placement::placement;

/// The key of the one record in the metadata group's tree.
pub const META_KEY: &str = "cluster";

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
    /// the members once they hold nothing. A drained node stays named here after it left the members
    /// (see [`ClusterMeta::left_by_drain`]), so that while it still runs it knows it was drained rather
    /// than removed while away, and does not join again.
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
    /// as [`placement`] placed the first shard groups, so the record describes the groups that exist.
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
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
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

    /// Whether `id` was drained and has left the members: it holds nothing, and joins again only once
    /// it restarts.
    pub fn left_by_drain(&self, id: &str) -> bool {
        self.draining.iter().any(|d| d == id) && !self.members.iter().any(|m| m.id == id)
    }

    /// Whether some member is being drained (as opposed to drained and gone).
    pub fn drain_in_progress(&self) -> bool {
        self.draining.iter().any(|d| self.members.iter().any(|m| m.id == *d))
    }

    /// Whether the record can describe a cluster of `shard_count` shards: a record from elsewhere that
    /// does not is ignored rather than routed by.
    pub fn fits(&self, shard_count: u32) -> bool {
        self.shard_count == shard_count && self.placement.len() == shard_count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogEntry;

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
        assert!(ClusterMeta::decode(&bad).is_err());
        assert!(ClusterMeta::decode(&bytes[..bytes.len() / 2]).is_err());
        // What `LogEntry::put` writes is what `read` decodes.
        let mut entry = LogEntry::default();
        entry.put(META_KEY, &meta);
        assert!(matches!(&entry.writes[0], crate::log::Write::Put { value, .. } if *value == bytes));
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
}
