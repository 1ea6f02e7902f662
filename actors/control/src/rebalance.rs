//! What a placement driver should move so that shards end up balanced over the cluster's current hosts.
//!
//! [`playground_proto::placement`] spreads replicas evenly over a fixed member list. Members change, though: a
//! node joins and holds nothing, a node is drained and must hand everything off, a node is lost and the
//! shards it held fall below their replication factor. The driver (one node) fixes that by moving replicas
//! and leaderships one at a time; this module only decides *what* to move. It is pure (no I/O, no clocks,
//! no randomness), so every node computes the same plan from the same inputs and tests need no cluster.
//!
//! # Replicas
//!
//! [`plan_replicas`] returns [`ReplicaMove`]s, most urgent first, because the driver runs only a few at a
//! time and the first ones should be the ones that protect data:
//!
//! 1. shards with fewer replicas than the replication factor get one more (`from: None`): they are one
//!    failure closer to losing their quorum than any other shard;
//! 2. replicas on nodes that are not hosts (drained or removed) move to a host: the node is on its way out;
//! 3. replicas move from hosts above their share to hosts below it, until the counts differ by at most one.
//!
//! Every step sends a replica to the host with the fewest replicas that may take it, and step 3 moves only
//! what the new per-host counts require (for a join of one node to three, a quarter of the replicas), so a
//! balanced placement yields no moves and a membership change costs about as few moves as it can.
//!
//! A shard gets at most one move per plan. A move's validity (`to` does not hold the shard, `from` does)
//! depends only on its own shard's replicas, so any subset of a plan, applied in any order, stays valid:
//! the driver can run a few moves, re-plan as each one completes, and never act on a stale move. Each move
//! is planned against the placement as if the moves before it had been applied, so the whole plan, applied,
//! lands on the counts it aims for. A shard with more replicas than the factor is mid-move (its new replica
//! was added, the old one not yet removed); finishing that is the driver's, so plans leave such shards alone.
//!
//! # Leaders
//!
//! [`plan_leaders`] evens out the leaderships, which is where a shard's load goes. Transfers are cheap (no
//! data moves), so it goes as far as the replica sets allow: when no replica of a busy node's shards sits on
//! an idle node, it chains transfers through a node in between.
//!
//! Everything iterates in sorted order and breaks ties by node name, then shard id, so the same input always
//! gives the same plan.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use playground_proto::ShardId;

/// One replica move: add `to` to the shard's replicas and then remove `from` (None: only add, the shard is
/// under-replicated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub shard: ShardId,
    pub from: Option<String>,
    pub to: String,
}

/// The replica moves that bring `placement` (the replicas of each shard, indexed by shard) to a balanced
/// placement over `hosts` (the members that may hold replicas, e.g. not draining), with `rf` replicas per
/// shard (at most `hosts.len()`). At most one move per shard. Ordered by urgency: shards below their
/// replication factor first, then replicas on nodes that are not hosts (drained/removed nodes), then moves
/// that even out the replica counts. See the [module docs](self) for why, and for what a partial apply means.
pub fn plan_replicas(placement: &[Vec<String>], hosts: &[String], rf: usize) -> Vec<ReplicaMove> {
    let mut layout = Layout::new(placement, hosts, rf);
    if layout.loads.is_empty() {
        return vec![];
    }
    let mut moves = Vec::new();

    for shard in 0..layout.shards.len() {
        if layout.shards[shard].len() < layout.rf {
            if let Some(to) = layout.emptiest_host_without(shard) {
                moves.push(layout.apply(shard, None, to));
            }
        }
    }

    for shard in 0..layout.shards.len() {
        if !layout.movable(shard) {
            continue;
        }
        let leaving = layout.shards[shard].iter().copied().find(|node| !layout.loads.contains_key(node));
        if let (Some(from), Some(to)) = (leaving, layout.emptiest_host_without(shard)) {
            moves.push(layout.apply(shard, Some(from), to));
        }
    }

    let targets = layout.targets();
    while let Some((shard, from, to)) = layout.next_evening_move(&targets) {
        moves.push(layout.apply(shard, Some(from), to));
    }
    moves
}

/// Leadership transfers (shard, to) that even out the leaders: `leaders[s]` is the current leader of shard
/// `s` (None if unknown: that shard is left alone and not counted). Transfers go only to a replica of the
/// shard that is in `hosts`. A leader on a node that is not a host is always moved away, to the host replica
/// with the fewest leaders. Then leaderships move from the busiest hosts to the idlest, through other hosts
/// when no shard links the two directly, until leader counts among hosts differ by at most one, as far as
/// the replica sets allow. At most one transfer per shard; any subset of the plan is valid.
pub fn plan_leaders(placement: &[Vec<String>], leaders: &[Option<String>], hosts: &[String]) -> Vec<(ShardId, String)> {
    let hosts: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
    // Host replicas per shard, the only places a leadership may go.
    let candidates: Vec<Vec<&str>> = placement
        .iter()
        .map(|replicas| {
            let set: BTreeSet<&str> = replicas.iter().map(String::as_str).filter(|n| hosts.contains(n)).collect();
            set.into_iter().collect()
        })
        .collect();
    let original: Vec<Option<&str>> = (0..placement.len()).map(|s| leaders.get(s).and_then(|l| l.as_deref())).collect();
    let mut state = Leadership::new(&original, &hosts);

    for (shard, replicas) in candidates.iter().enumerate() {
        let Some(leader) = state.current[shard] else { continue };
        if hosts.contains(leader) {
            continue;
        }
        // `min_by_key` keeps the first of equals, and the candidates are sorted: ties go to the first name.
        let to = replicas.iter().copied().min_by_key(|h| state.counts.get(h).copied().unwrap_or(0));
        if let Some(to) = to {
            state.transfer(shard, to);
        }
    }

    // Each path moves one leadership from a host to one with at least two fewer, which shrinks the sum of
    // squared counts, so this ends; when it does, no host can shed a leadership to one two below it.
    while let Some(path) = next_leader_path(&candidates, &state.current, &state.counts) {
        for (shard, to) in path {
            state.transfer(shard, to);
        }
    }

    // A shard passed along twice (through a node in between, then on) needs only its last transfer, and one
    // passed back to where it started needs none.
    let Leadership { current, order, .. } = state;
    order
        .into_iter()
        .filter_map(|shard| {
            let to = current[shard]?;
            (original[shard] != Some(to)).then(|| (shard_id(shard), to.to_owned()))
        })
        .collect()
}

/// Whether the placement is balanced: every shard has min(rf, hosts) distinct replicas, all on hosts, and
/// replica counts per host differ by at most one.
pub fn is_balanced(placement: &[Vec<String>], hosts: &[String], rf: usize) -> bool {
    let hosts: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
    let rf = rf.min(hosts.len());
    let mut counts: BTreeMap<&str, usize> = hosts.iter().map(|h| (*h, 0)).collect();
    for replicas in placement {
        let replicas: BTreeSet<&str> = replicas.iter().map(String::as_str).collect();
        if replicas.len() != rf || !replicas.is_subset(&hosts) {
            return false;
        }
        for node in replicas {
            *counts.entry(node).or_default() += 1;
        }
    }
    match (counts.values().max(), counts.values().min()) {
        (Some(max), Some(min)) => max - min <= 1,
        _ => true,
    }
}

/// Replicas per node (a node listed twice for one shard counts once), for metrics and views.
pub fn replica_counts(placement: &[Vec<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for replicas in placement {
        let distinct: BTreeSet<&String> = replicas.iter().collect();
        for node in distinct {
            *counts.entry(node.clone()).or_default() += 1;
        }
    }
    counts
}

/// Leaders per node (shards whose leader is unknown are not counted), for metrics and views.
pub fn leader_counts(leaders: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for leader in leaders.iter().flatten() {
        *counts.entry(leader.clone()).or_default() += 1;
    }
    counts
}

fn shard_id(index: usize) -> ShardId {
    ShardId::try_from(index).expect("a placement has no more shards than ShardId can number")
}

/// The placement as the plan so far would leave it.
struct Layout<'a> {
    /// Distinct replicas of each shard.
    shards: Vec<BTreeSet<&'a str>>,
    /// Replicas per host, every host present (a new host holds zero and is the first to fill).
    loads: BTreeMap<&'a str, usize>,
    /// Shards that already have a move in the plan.
    moved: Vec<bool>,
    rf: usize,
}

impl<'a> Layout<'a> {
    fn new(placement: &'a [Vec<String>], hosts: &'a [String], rf: usize) -> Self {
        let mut loads: BTreeMap<&str, usize> = hosts.iter().map(|h| (h.as_str(), 0)).collect();
        let shards: Vec<BTreeSet<&str>> =
            placement.iter().map(|replicas| replicas.iter().map(String::as_str).collect()).collect();
        for node in shards.iter().flatten() {
            if let Some(load) = loads.get_mut(node) {
                *load += 1;
            }
        }
        let rf = rf.min(loads.len());
        Layout { moved: vec![false; shards.len()], shards, loads, rf }
    }

    /// Whether the plan may still move this shard: one move each, and none for a shard mid-move.
    fn movable(&self, shard: usize) -> bool {
        !self.moved[shard] && self.shards[shard].len() <= self.rf
    }

    fn emptiest_host_without(&self, shard: usize) -> Option<&'a str> {
        // `min_by_key` keeps the first of equals, and `loads` iterates by name: ties go to the first name.
        self.loads
            .iter()
            .filter(|(host, _)| !self.shards[shard].contains(*host))
            .min_by_key(|(_, load)| **load)
            .map(|(host, _)| *host)
    }

    fn apply(&mut self, shard: usize, from: Option<&'a str>, to: &'a str) -> ReplicaMove {
        debug_assert!(!self.shards[shard].contains(to), "shard {shard} already on {to}");
        self.shards[shard].insert(to);
        *self.loads.entry(to).or_default() += 1;
        if let Some(from) = from {
            debug_assert!(self.shards[shard].contains(from), "shard {shard} not on {from}");
            self.shards[shard].remove(from);
            if let Some(load) = self.loads.get_mut(from) {
                *load -= 1;
            }
        }
        self.moved[shard] = true;
        ReplicaMove { shard: shard_id(shard), from: from.map(str::to_owned), to: to.to_owned() }
    }

    /// Each host's share of the replicas on hosts: the floor or ceiling of the mean. The ceilings go to the
    /// hosts that hold the most already, so they keep the spare replicas instead of someone moving them.
    fn targets(&self) -> BTreeMap<&'a str, usize> {
        let total: usize = self.loads.values().sum();
        let (base, spare) = (total / self.loads.len(), total % self.loads.len());
        let mut fullest_first: Vec<(&str, usize)> = self.loads.iter().map(|(h, l)| (*h, *l)).collect();
        fullest_first.sort_by(|(a, la), (b, lb)| lb.cmp(la).then(a.cmp(b)));
        fullest_first.into_iter().enumerate().map(|(i, (host, _))| (host, base + usize::from(i < spare))).collect()
    }

    /// The most needed move from a host above its share to one below it: the receiver that lacks the most,
    /// the donor with the most to spare, then the lowest shard on the donor that the receiver lacks. Each
    /// move fills one missing replica, so the plan makes exactly as many as the shares require, unless the
    /// one-move-per-shard rule blocks some, which the next plan then makes.
    fn next_evening_move(&self, targets: &BTreeMap<&'a str, usize>) -> Option<(usize, &'a str, &'a str)> {
        let mut receivers: Vec<(&'a str, usize)> =
            self.loads.iter().filter_map(|(h, l)| Some((*h, targets.get(h)?.checked_sub(*l)?))).collect();
        let mut donors: Vec<(&'a str, usize)> =
            self.loads.iter().filter_map(|(h, l)| Some((*h, l.checked_sub(*targets.get(h)?)?))).collect();
        receivers.retain(|(_, lack)| *lack > 0);
        donors.retain(|(_, spare)| *spare > 0);
        for list in [&mut receivers, &mut donors] {
            list.sort_by(|(a, na), (b, nb)| nb.cmp(na).then(a.cmp(b)));
        }
        for (to, _) in &receivers {
            for (from, _) in &donors {
                let shard = (0..self.shards.len())
                    .find(|s| self.movable(*s) && self.shards[*s].contains(from) && !self.shards[*s].contains(to));
                if let Some(shard) = shard {
                    return Some((shard, from, to));
                }
            }
        }
        None
    }
}

/// The leaders as the plan so far would leave them.
struct Leadership<'a> {
    current: Vec<Option<&'a str>>,
    /// Leaders per host, every host present; leaders on other nodes are not counted.
    counts: BTreeMap<&'a str, usize>,
    /// Shards in the order of their first transfer, which the plan keeps so that evacuations come first.
    order: Vec<usize>,
    transferred: Vec<bool>,
}

impl<'a> Leadership<'a> {
    fn new(leaders: &[Option<&'a str>], hosts: &BTreeSet<&'a str>) -> Self {
        let mut counts: BTreeMap<&str, usize> = hosts.iter().map(|h| (*h, 0)).collect();
        for leader in leaders.iter().flatten() {
            if let Some(count) = counts.get_mut(leader) {
                *count += 1;
            }
        }
        Leadership { current: leaders.to_vec(), counts, order: Vec::new(), transferred: vec![false; leaders.len()] }
    }

    fn transfer(&mut self, shard: usize, to: &'a str) {
        if let Some(count) = self.current[shard].and_then(|from| self.counts.get_mut(from)) {
            *count -= 1;
        }
        *self.counts.entry(to).or_default() += 1;
        self.current[shard] = Some(to);
        if !self.transferred[shard] {
            self.transferred[shard] = true;
            self.order.push(shard);
        }
    }
}

/// The next chain of leadership transfers, as (shard, to) in the order to apply them: from the busiest
/// host that can reach, through shards it leads and their host replicas, a host with at least two fewer
/// leaders; to the idlest such host, then the nearest (fewest transfers), then by name. None when no host
/// can shed a leadership to one with two fewer.
fn next_leader_path<'a>(
    candidates: &[Vec<&'a str>],
    current: &[Option<&'a str>],
    counts: &BTreeMap<&'a str, usize>,
) -> Option<Vec<(usize, &'a str)>> {
    let mut led: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (shard, leader) in current.iter().enumerate() {
        if let Some(leader) = leader.filter(|l| counts.contains_key(l)) {
            led.entry(leader).or_default().push(shard);
        }
    }
    let mut busiest_first: Vec<(&'a str, usize)> = counts.iter().map(|(h, c)| (*h, *c)).collect();
    busiest_first.sort_by(|(a, ca), (b, cb)| cb.cmp(ca).then(a.cmp(b)));

    for (donor, donor_count) in busiest_first {
        // Breadth first, so every host is reached by its shortest chain; `via` records the transfer that
        // reached it (shard, previous host).
        let mut via: BTreeMap<&'a str, (usize, &'a str)> = BTreeMap::new();
        let mut distance: BTreeMap<&'a str, usize> = BTreeMap::from([(donor, 0)]);
        let mut queue = VecDeque::from([donor]);
        while let Some(host) = queue.pop_front() {
            let d = distance[host];
            for shard in led.get(host).into_iter().flatten() {
                for next in &candidates[*shard] {
                    if !distance.contains_key(next) {
                        distance.insert(next, d + 1);
                        via.insert(next, (*shard, host));
                        queue.push_back(next);
                    }
                }
            }
        }
        let receiver = distance
            .iter()
            .filter(|(host, _)| counts.get(*host).is_some_and(|c| c + 2 <= donor_count))
            .min_by_key(|(host, d)| (counts.get(*host).copied().unwrap_or(0), **d, **host))
            .map(|(host, _)| *host);
        if let Some(mut host) = receiver {
            let mut path = Vec::new();
            while let Some((shard, previous)) = via.get(host) {
                path.push((*shard, host));
                host = previous;
            }
            path.reverse();
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use playground_proto::placement;

    const SHARDS: ShardId = 64;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn static_placement(members: &[String], rf: usize) -> Vec<Vec<String>> {
        (0..SHARDS).map(|shard| placement(shard, members, rf)).collect()
    }

    /// Applies a move the way the driver does (the new replica takes the old one's place in the list),
    /// failing the test if the move is not valid against the placement it is applied to.
    fn apply(placement: &mut [Vec<String>], mv: &ReplicaMove) {
        let replicas = &mut placement[mv.shard as usize];
        assert!(!replicas.contains(&mv.to), "{mv:?}: `to` already holds the shard: {replicas:?}");
        assert_ne!(mv.from.as_ref(), Some(&mv.to), "{mv:?}");
        match &mv.from {
            None => replicas.push(mv.to.clone()),
            Some(from) => {
                let at = replicas.iter().position(|r| r == from);
                let at = at.unwrap_or_else(|| panic!("{mv:?}: `from` does not hold the shard: {replicas:?}"));
                replicas[at] = mv.to.clone();
            }
        }
    }

    fn assert_one_move_per_shard(plan: &[ReplicaMove]) {
        let shards: BTreeSet<ShardId> = plan.iter().map(|m| m.shard).collect();
        assert_eq!(shards.len(), plan.len(), "one move per shard: {plan:?}");
    }

    /// Plans, applies the first `take` moves of each plan, and re-plans until balanced; returns the number of
    /// moves applied. Fails if it takes more than `max_rounds` plans.
    fn converge(placement: &mut [Vec<String>], hosts: &[String], rf: usize, take: usize, max_rounds: usize) -> usize {
        let mut applied = 0;
        for _ in 0..max_rounds {
            let plan = plan_replicas(placement, hosts, rf);
            if plan.is_empty() {
                assert!(is_balanced(placement, hosts, rf), "no moves left but unbalanced: {placement:?}");
                return applied;
            }
            assert_one_move_per_shard(&plan);
            for mv in plan.iter().take(take) {
                apply(placement, mv);
                applied += 1;
            }
        }
        panic!("not balanced after {max_rounds} plans: {:?}", replica_counts(placement));
    }

    /// The fewest moves that reach balanced counts: what the hosts below their share lack, with the spare
    /// replicas left on the hosts that hold the most.
    fn minimum_moves(placement: &[Vec<String>], hosts: &[String], rf: usize) -> usize {
        let counts = replica_counts(placement);
        let mut current: Vec<usize> = hosts.iter().map(|h| counts.get(h).copied().unwrap_or(0)).collect();
        current.sort_unstable_by(|a, b| b.cmp(a));
        let total = placement.len() * rf.min(hosts.len());
        let (base, spare) = (total / hosts.len(), total % hosts.len());
        current.iter().enumerate().map(|(i, c)| (base + usize::from(i < spare)).saturating_sub(*c)).sum()
    }

    #[test]
    fn a_balanced_placement_needs_no_moves() {
        for n in [3, 4, 5] {
            let members = names(n);
            let placed = static_placement(&members, 3);
            assert!(is_balanced(&placed, &members, 3));
            assert!(plan_replicas(&placed, &members, 3).is_empty(), "{n} nodes");
        }
    }

    #[test]
    fn joins_converge_with_close_to_the_fewest_moves() {
        for (before, after) in [(3, 4), (3, 5), (4, 5)] {
            let mut placed = static_placement(&names(before), 3);
            let hosts = names(after);
            assert!(!is_balanced(&placed, &hosts, 3));
            let minimum = minimum_moves(&placed, &hosts, 3);
            let first = plan_replicas(&placed, &hosts, 3);
            assert!(first.iter().all(|m| m.from.is_some()), "nothing is under-replicated: {first:?}");
            let moves = converge(&mut placed, &hosts, 3, usize::MAX, 4);
            assert!(moves <= minimum + 2, "{before} -> {after}: {moves} moves, minimum {minimum}");
        }
        let mut placed = static_placement(&names(3), 3);
        assert_eq!(plan_replicas(&placed, &names(4), 3).len(), 48, "64 × 3 / 4 replicas reach the new node");
        assert_eq!(converge(&mut placed, &names(4), 3, usize::MAX, 2), 48);
    }

    #[test]
    fn a_drained_node_is_emptied_first() {
        let members = names(5);
        let mut placed = static_placement(&members, 3);
        let drained = "node-2".to_owned();
        let hosts: Vec<String> = members.iter().filter(|m| **m != drained).cloned().collect();
        let held = replica_counts(&placed)[&drained];

        let plan = plan_replicas(&placed, &hosts, 3);
        let evacuations = plan.iter().take_while(|m| m.from.as_ref() == Some(&drained)).count();
        assert_eq!(evacuations, held, "every replica on the drained node moves, before any evening move");
        assert!(plan.iter().all(|m| m.to != drained));
        for mv in &plan {
            apply(&mut placed, mv);
        }
        assert!(!replica_counts(&placed).contains_key(&drained), "{placed:?}");

        converge(&mut placed, &hosts, 3, usize::MAX, 3);
        assert_eq!(replica_counts(&placed).len(), 4);
    }

    #[test]
    fn a_lost_node_is_replaced_before_anything_else() {
        let members = names(5);
        let lost = "node-4".to_owned();
        let mut placed = static_placement(&members, 3);
        for replicas in &mut placed {
            replicas.retain(|r| *r != lost);
        }
        let hosts = names(4);
        let short: BTreeSet<ShardId> = (0..SHARDS).filter(|s| placed[*s as usize].len() == 2).collect();
        assert!(!short.is_empty());

        let plan = plan_replicas(&placed, &hosts, 3);
        let additions: BTreeSet<ShardId> = plan.iter().take_while(|m| m.from.is_none()).map(|m| m.shard).collect();
        assert_eq!(additions, short, "every short shard gets a replica, first");
        assert!(plan.iter().skip(short.len()).all(|m| m.from.is_some()), "{plan:?}");

        converge(&mut placed, &hosts, 3, usize::MAX, 4);
        assert!(placed.iter().all(|replicas| replicas.len() == 3), "{placed:?}");
    }

    #[test]
    fn applying_part_of_each_plan_still_converges() {
        for take in [1, 5, 17] {
            let mut placed = static_placement(&names(3), 3);
            let hosts = names(5);
            let minimum = minimum_moves(&placed, &hosts, 3);
            let moves = converge(&mut placed, &hosts, 3, take, 200);
            assert!(moves <= minimum + 2, "{take} at a time: {moves} moves, minimum {minimum}");

            // A drain and a join at once, applied a few moves at a time.
            let mut placed = static_placement(&names(4), 3);
            let hosts: Vec<String> = names(6).into_iter().filter(|h| h != "node-1").collect();
            converge(&mut placed, &hosts, 3, take, 200);
            assert!(!replica_counts(&placed).contains_key("node-1"));
        }
    }

    #[test]
    fn the_factor_is_capped_by_the_hosts() {
        let mut placed = static_placement(&names(2), 2);
        assert!(plan_replicas(&placed, &[], 3).is_empty(), "no hosts, no moves");
        let hosts = names(2);
        assert!(is_balanced(&placed, &hosts, 3), "rf 3 on 2 hosts means 2 replicas");
        assert!(plan_replicas(&placed, &hosts, 3).is_empty());
        // A third host raises the effective factor: every shard gains a replica there.
        let hosts = names(3);
        let plan = plan_replicas(&placed, &hosts, 3);
        assert_eq!(plan.len(), SHARDS as usize);
        assert!(plan.iter().all(|m| m.from.is_none() && m.to == "node-2"), "{plan:?}");
        converge(&mut placed, &hosts, 3, usize::MAX, 2);
    }

    #[test]
    fn a_shard_mid_move_is_left_alone() {
        let members = names(4);
        let mut placed = static_placement(&members, 3);
        placed[0].push("node-3".to_owned());
        let hosts: Vec<String> = names(3);
        assert!(plan_replicas(&placed, &hosts, 3).iter().all(|m| m.shard != 0));
    }

    #[test]
    fn plans_are_deterministic_and_serializable() {
        let placed = static_placement(&names(3), 3);
        let plan = plan_replicas(&placed, &names(5), 3);
        assert_eq!(plan, plan_replicas(&placed, &names(5), 3));
        let mut reversed = names(5);
        reversed.reverse();
        assert_eq!(plan, plan_replicas(&placed, &reversed, 3), "host order does not matter");
        let json = serde_json::to_string(&plan[0]).expect("a move serializes");
        assert_eq!(serde_json::from_str::<ReplicaMove>(&json).expect("and deserializes"), plan[0]);
    }

    fn apply_transfers(
        placement: &[Vec<String>],
        leaders: &mut [Option<String>],
        hosts: &[String],
        plan: &[(ShardId, String)],
    ) {
        let shards: BTreeSet<ShardId> = plan.iter().map(|(s, _)| *s).collect();
        assert_eq!(shards.len(), plan.len(), "one transfer per shard: {plan:?}");
        for (shard, to) in plan {
            let shard = *shard as usize;
            assert!(placement[shard].contains(to), "shard {shard} to {to}: not a replica");
            assert!(hosts.contains(to), "shard {shard} to {to}: not a host");
            assert!(leaders[shard].is_some(), "shard {shard}: leader unknown, must be left alone");
            assert_ne!(leaders[shard].as_ref(), Some(to), "shard {shard}: transfer to its own leader");
            leaders[shard] = Some(to.clone());
        }
    }

    fn spread(leaders: &[Option<String>], hosts: &[String]) -> usize {
        let counts = leader_counts(leaders);
        let of = |h: &String| counts.get(h).copied().unwrap_or(0);
        let max = hosts.iter().map(of).max().unwrap_or(0);
        let min = hosts.iter().map(of).min().unwrap_or(0);
        max - min
    }

    #[test]
    fn leaders_on_one_node_spread_out() {
        let hosts = names(3);
        let placed = static_placement(&hosts, 3);
        let mut leaders = vec![Some("node-0".to_owned()); SHARDS as usize];
        let plan = plan_leaders(&placed, &leaders, &hosts);
        assert_eq!(plan.len(), 42, "node-0 keeps 22 of 64, the fewest transfers");
        apply_transfers(&placed, &mut leaders, &hosts, &plan);
        assert!(spread(&leaders, &hosts) <= 1, "{:?}", leader_counts(&leaders));
        assert!(plan_leaders(&placed, &leaders, &hosts).is_empty(), "balanced leaders need no transfers");

        // Five nodes, three replicas each: a leader on the lowest name of every replica set leaves node-3
        // and node-4 with little, and some shards reach them only through another node.
        let hosts = names(5);
        let placed = static_placement(&hosts, 3);
        let mut leaders: Vec<Option<String>> = placed.iter().map(|r| r.iter().min().cloned()).collect();
        let plan = plan_leaders(&placed, &leaders, &hosts);
        assert_eq!(plan.len(), 25, "from 38/13/13/0/0 to 13/13/13/13/12: {:?}", leader_counts(&leaders));
        apply_transfers(&placed, &mut leaders, &hosts, &plan);
        assert!(spread(&leaders, &hosts) <= 1, "{:?}", leader_counts(&leaders));
    }

    #[test]
    fn a_leader_on_a_non_host_moves_to_the_least_busy_replica() {
        let members = names(4);
        let placed = static_placement(&members, 3);
        let mut leaders: Vec<Option<String>> = placed.iter().map(|r| r.first().cloned()).collect();
        let hosts: Vec<String> = members.iter().filter(|m| *m != "node-3").cloned().collect();
        let evacuated: Vec<ShardId> =
            (0..SHARDS).filter(|s| leaders[*s as usize].as_deref() == Some("node-3")).collect();
        assert!(!evacuated.is_empty());

        let plan = plan_leaders(&placed, &leaders, &hosts);
        let first: Vec<ShardId> = plan.iter().take(evacuated.len()).map(|(s, _)| *s).collect();
        assert_eq!(first, evacuated, "evacuations come first");
        apply_transfers(&placed, &mut leaders, &hosts, &plan);
        assert!(leaders.iter().all(|l| l.as_deref() != Some("node-3")));
        assert!(spread(&leaders, &hosts) <= 1, "{:?}", leader_counts(&leaders));

        // node-x leads shard 0; of its host replicas, node-b leads less than node-a.
        let placed = vec![
            vec!["node-x".to_owned(), "node-a".to_owned(), "node-b".to_owned()],
            vec!["node-a".to_owned(), "node-b".to_owned()],
            vec!["node-a".to_owned(), "node-b".to_owned()],
        ];
        let leaders = vec![Some("node-x".to_owned()), Some("node-a".to_owned()), Some("node-a".to_owned())];
        let hosts = vec!["node-a".to_owned(), "node-b".to_owned()];
        assert_eq!(plan_leaders(&placed, &leaders, &hosts), vec![(0, "node-b".to_owned())]);
    }

    #[test]
    fn leaderships_chain_through_a_node_in_between() {
        // node-0 leads two shards, node-2 none, and no shard of node-0 has a replica on node-2: node-0 hands
        // one to node-1, which hands one of its own to node-2.
        let placed = vec![names(2), names(2), vec!["node-1".to_owned(), "node-2".to_owned()]];
        let hosts = names(3);
        let mut leaders = vec![Some("node-0".to_owned()), Some("node-0".to_owned()), Some("node-1".to_owned())];
        let plan = plan_leaders(&placed, &leaders, &hosts);
        assert_eq!(plan, vec![(0, "node-1".to_owned()), (2, "node-2".to_owned())]);
        apply_transfers(&placed, &mut leaders, &hosts, &plan);
        assert_eq!(leader_counts(&leaders).values().collect::<Vec<_>>(), [&1, &1, &1]);
    }

    #[test]
    fn unknown_leaders_are_left_alone() {
        let hosts = names(3);
        let placed = static_placement(&hosts, 3);
        let mut leaders = vec![Some("node-0".to_owned()); SHARDS as usize];
        for shard in [0, 7, 33] {
            leaders[shard] = None;
        }
        let plan = plan_leaders(&placed, &leaders, &hosts);
        assert!(plan.iter().all(|(s, _)| ![0, 7, 33].contains(s)), "{plan:?}");
        apply_transfers(&placed, &mut leaders, &hosts, &plan);
        assert!(spread(&leaders, &hosts) <= 1, "{:?}", leader_counts(&leaders));
        assert_eq!(leader_counts(&leaders).values().sum::<usize>(), SHARDS as usize - 3);
    }

    #[test]
    fn leaders_stay_when_the_replica_sets_allow_no_better() {
        // Shard 0 lives only on node-0 and node-1, shard 1 only on node-0: node-2 can lead nothing.
        let placed = vec![names(2), vec!["node-0".to_owned()]];
        let hosts = names(3);
        let leaders = vec![Some("node-0".to_owned()), Some("node-0".to_owned())];
        assert_eq!(plan_leaders(&placed, &leaders, &hosts), vec![(0, "node-1".to_owned())]);
        let alone = vec![Some("node-0".to_owned()), None];
        assert!(plan_leaders(&placed, &alone, &hosts).is_empty(), "1 vs 0 is balanced enough");
        assert!(plan_leaders(&placed, &leaders, &[]).is_empty());
    }
}
