//! The edits the placement driver makes to the cluster record ([`ClusterMeta`]), as pure functions of
//! the record: admitting a member, draining one and letting it go once it holds nothing, removing members
//! lost for good, and writing planned replica moves into the placement. Each says whether it changed
//! anything, so that `record::update` writes nothing when it did not; the driver (`crate::driver`) runs
//! them against the metadata group and carries out what they plan.

use std::collections::BTreeSet;

use playground_proto::{ClusterMeta, ControlError, MemberRecord, ShardId};

use crate::rebalance;

/// Marks member `id` as draining, if the others can hold `replication_factor` replicas of every shard
/// (or as many as there are members, in a smaller cluster); whether anything changed.
pub(crate) fn start_draining(
    record: &mut ClusterMeta,
    id: &str,
    replication_factor: usize,
) -> Result<bool, ControlError> {
    if !record.members.iter().any(|m| m.id == id) {
        return Err(ControlError::UnknownMember(id.to_owned()));
    }
    if record.draining.iter().any(|d| d == id) {
        return Ok(false);
    }
    let left = record.hosts().len() - 1;
    let needed = replication_factor.min(record.members.len());
    if left < needed {
        return Err(ControlError::CannotDrain(format!(
            "{id} cannot be drained: {left} other member(s) cannot hold {needed} replicas of every shard"
        )));
    }
    record.draining.push(id.to_owned());
    record.draining.sort();
    Ok(true)
}

/// Takes `gone` out of the members and out of every shard's replicas; whether anything changed.
pub(crate) fn remove_members(record: &mut ClusterMeta, gone: &[String]) -> bool {
    let before = record.members.len();
    record.members.retain(|m| !gone.contains(&m.id));
    record.draining.retain(|d| !gone.contains(d));
    for replicas in &mut record.placement {
        replicas.retain(|r| !gone.contains(r));
    }
    record.members.len() != before
}

/// How many drained nodes that left the record keeps named (see [`ClusterMeta::left_by_drain`]): a
/// drained node stops soon after it left, so only the latest few can still be running.
const DRAINED_KEPT: usize = 16;

/// Takes the drained members (draining, and holding no replica of any group any more, the metadata
/// group's included) out of the members, keeping them named as drained; whether any left.
pub(crate) fn remove_drained(record: &mut ClusterMeta, still_holding: &BTreeSet<String>) -> bool {
    let gone: Vec<String> = record
        .draining
        .iter()
        .filter(|d| record.members.iter().any(|m| m.id == **d))
        .filter(|d| !still_holding.contains(*d) && !record.placement.iter().flatten().any(|r| r == *d))
        .cloned()
        .collect();
    record.members.retain(|m| !gone.contains(&m.id));
    let mut left: Vec<String> = record.draining.iter().filter(|d| record.left_by_drain(d)).cloned().collect();
    if left.len() > DRAINED_KEPT {
        // Beyond that, the first by name of those that left in earlier rounds are forgotten.
        let forget: Vec<String> = left.drain(..left.len() - DRAINED_KEPT).filter(|d| !gone.contains(d)).collect();
        record.draining.retain(|d| !forget.contains(d));
    }
    !gone.is_empty()
}

/// Adds member `id` at `addr` to the record (or updates its address); whether anything changed.
pub(crate) fn admit(record: &mut ClusterMeta, id: &str, addr: &str) -> bool {
    match record.members.iter_mut().find(|m| m.id == id) {
        Some(m) if m.addr == addr => false,
        Some(m) => {
            m.addr = addr.to_owned();
            true
        }
        None => {
            // A node drained before that asks to join has restarted: it is wanted again.
            record.draining.retain(|d| d != id);
            record.members.push(MemberRecord { id: id.to_owned(), addr: addr.to_owned() });
            record.members.sort_by(|a, b| a.id.cmp(&b.id));
            true
        }
    }
}

/// Writes up to `room` planned moves into the record's placement, none for a shard in `busy` (still
/// moving: its learners are being caught up); whether it changed the record.
pub(crate) fn plan_into(
    record: &mut ClusterMeta,
    replication_factor: usize,
    room: usize,
    busy: &BTreeSet<ShardId>,
) -> bool {
    let hosts = record.hosts();
    let rf = replication_factor.clamp(1, hosts.len().max(1));
    let moves = rebalance::plan_replicas(&record.placement, &hosts, rf);
    let mut planned = 0;
    let mut touched = BTreeSet::new();
    for mv in moves.into_iter().filter(|m| !busy.contains(&m.shard) && touched.insert(m.shard)).take(room) {
        let replicas = &mut record.placement[mv.shard as usize];
        if let Some(from) = &mv.from {
            replicas.retain(|r| r != from);
        }
        replicas.push(mv.to);
        planned += 1;
    }
    let factor_changed = record.replication_factor != rf as u32;
    record.replication_factor = rf as u32;
    planned > 0 || factor_changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(members: &[&str], shards: u32) -> ClusterMeta {
        let members = members.iter().map(|m| MemberRecord { id: (*m).into(), addr: format!("{m}:7100") }).collect();
        ClusterMeta::initial(shards, 3, members)
    }

    #[test]
    fn a_join_adds_the_member_once_and_updates_its_address() {
        let mut r = record(&["a", "b", "c"], 4);
        assert!(admit(&mut r, "d", "d:7100"));
        assert!(!admit(&mut r, "d", "d:7100"), "a repeated join changes nothing");
        assert!(admit(&mut r, "d", "d:7200"));
        let ids: Vec<&str> = r.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c", "d"]);
        assert_eq!(r.members[3].addr, "d:7200");
    }

    #[test]
    fn a_drained_member_leaves_but_stays_named_until_it_joins_again() {
        let mut r = record(&["a", "b", "c", "d"], 4);
        assert!(start_draining(&mut r, "d", 3).expect("three others remain"));
        for p in &mut r.placement {
            p.retain(|id| id != "d");
        }
        let holding: BTreeSet<String> = ["d".to_owned()].into();
        assert!(!remove_drained(&mut r, &holding), "a member still holding a replica stays");
        assert!(r.drain_in_progress());
        assert!(remove_drained(&mut r, &BTreeSet::new()));
        assert!(!r.members.iter().any(|m| m.id == "d"));
        assert!(r.left_by_drain("d"), "d, still running, must know it was drained: {r:?}");
        assert!(!r.drain_in_progress());
        assert!(!remove_drained(&mut r, &BTreeSet::new()), "nothing more to remove");
        assert!(admit(&mut r, "d", "d:7100"), "d restarted and asks to join");
        assert!(!r.left_by_drain("d") && r.draining.is_empty() && r.hosts().contains(&"d".to_owned()));
    }

    #[test]
    fn only_the_latest_drained_nodes_stay_named() {
        let mut r = record(&["a", "b", "c"], 2);
        for i in 0..DRAINED_KEPT + 5 {
            let id = format!("n{i:02}");
            admit(&mut r, &id, "x:1");
            assert!(start_draining(&mut r, &id, 3).expect("others remain"));
            assert!(remove_drained(&mut r, &BTreeSet::new()));
            assert!(r.left_by_drain(&id), "the one that just left is named: {:?}", r.draining);
            assert!(r.draining.len() <= DRAINED_KEPT);
        }
        assert_eq!(r.members.len(), 3);
    }

    #[test]
    fn planning_moves_at_most_room_shards_and_converges_to_even_counts() {
        let mut r = record(&["a", "b", "c"], 16);
        assert!(!plan_into(&mut r, 3, 4, &BTreeSet::new()), "balanced: nothing to plan");
        admit(&mut r, "d", "d:7100");
        let mut rounds = 0;
        loop {
            let before = r.placement.clone();
            if !plan_into(&mut r, 3, 4, &BTreeSet::new()) {
                break;
            }
            let changed = before.iter().zip(&r.placement).filter(|(a, b)| a != b).count();
            assert!(changed <= 4, "round {rounds}: {changed} shards changed");
            for p in &r.placement {
                assert_eq!(p.iter().collect::<BTreeSet<_>>().len(), 3, "three distinct replicas: {p:?}");
            }
            rounds += 1;
            assert!(rounds < 20, "converges");
        }
        let hosts: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| (*s).to_owned()).collect();
        assert!(rebalance::is_balanced(&r.placement, &hosts, 3), "{:?}", rebalance::replica_counts(&r.placement));
        let counts = rebalance::replica_counts(&r.placement);
        assert_eq!(counts["d"], 12, "the newcomer carries its share: {counts:?}");

        // A cluster that started with two members reaches the configured factor once a third joins.
        let mut small = record(&["a", "b"], 4);
        assert_eq!(small.replication_factor, 2);
        admit(&mut small, "c", "c:7100");
        assert!(plan_into(&mut small, 3, 4, &BTreeSet::new()));
        assert_eq!(small.replication_factor, 3);
        assert!(small.placement.iter().all(|p| p.len() == 3), "{:?}", small.placement);
    }
}
