//! Which nodes hold which shards, computed the same way on every node so that no one has to agree on it:
//! node ids are a stable hash of node names, and a shard's replicas are a window over the sorted members.

use crate::ids::{NodeId, ShardId};

/// A node's id in every shard group: the FNV-1a hash of its name (never `DefaultHasher`, which differs
/// between processes), so ids need no coordination and stay the same across restarts.
pub fn node_id_of(name: &str) -> NodeId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.as_bytes().iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The nodes that hold a replica of `shard`, preferred leader first: `rf` (at most the number of members)
/// distinct nodes, taken one after the other from the sorted members, starting at `shard % n`. Every node
/// holds about as many replicas as any other (within one), and is first, so preferred leader, of about
/// as many shards too.
pub fn placement(shard: ShardId, members: &[String], rf: usize) -> Vec<String> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    if n == 0 {
        return vec![];
    }
    let rf = rf.clamp(1, n);
    let start = shard as usize % n;
    (0..rf).map(|i| sorted[(start + i) % n].clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        // FNV-1a of "a", a published test vector.
        assert_eq!(node_id_of("a"), 0xaf63_dc4c_8601_ec8c);
        let ids: BTreeSet<_> = names(100).iter().map(|n| node_id_of(n)).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn replicas_are_distinct_and_spread_evenly() {
        for n in [3, 4, 5] {
            let members = names(n);
            let mut replicas: BTreeMap<String, usize> = BTreeMap::new();
            let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
            for shard in 0..64 {
                let placed = placement(shard, &members, 3);
                assert_eq!(placed.len(), 3, "{n} nodes, shard {shard}");
                assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3, "distinct replicas: {placed:?}");
                *firsts.entry(placed[0].clone()).or_default() += 1;
                for node in placed {
                    *replicas.entry(node).or_default() += 1;
                }
            }
            for counts in [&replicas, &firsts] {
                assert_eq!(counts.len(), n, "every node is used: {counts:?}");
                let (min, max) = (counts.values().min(), counts.values().max());
                assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{n} nodes: {counts:?}");
            }
        }
    }

    #[test]
    fn placement_ignores_member_order_and_caps_the_factor() {
        let members = names(4);
        let mut reversed = members.clone();
        reversed.reverse();
        for shard in 0..16 {
            assert_eq!(placement(shard, &members, 3), placement(shard, &reversed, 3));
        }
        assert_eq!(placement(5, &["solo".to_owned()], 3), vec!["solo".to_owned()]);
        assert_eq!(placement(5, &names(2), 3).len(), 2);
        assert!(placement(5, &[], 3).is_empty());
    }
}
