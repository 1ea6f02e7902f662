//! The leader lease of one group: while it holds, the leader serves reads from its own state without a
//! quorum round. The argument is in ARCHITECTURE.md ("Reads: the leader lease"); in short:
//!
//! - The lease starts at the **send time** of the newest AppendEntries that a quorum (with the leader)
//!   accepted in the leader's term, and lasts [`LEASE`]: the shortest election timeout less a margin for
//!   clock rate drift. A follower that accepted that request starts no election for at least the shortest
//!   election timeout after receiving it (its own timer), and votes for no one else for the longest one
//!   (openraft's vote lease, kept across restarts by [`Lease::votes_held`]). Any majority that elects a
//!   new leader holds the leader or one of those followers, so no other leader can exist before the lease
//!   ends, except with this node's own vote.
//! - Anything through which this node could learn of, or help make, another leader revokes the lease
//!   before openraft sees it: an inbound Vote, AppendEntries or InstallSnapshot, a reply carrying a
//!   higher vote, and a hand-over. Only acknowledgements of requests sent after the revocation count
//!   again.
//! - `Instant` is the monotonic clock: a shifted wall clock (the `skew` simulation) moves no lease.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use playground_proto::NodeId;

use super::settings::{ELECTION_TIMEOUT_MIN, LEADER_LEASE};

/// Allowance for the clocks of two nodes running at different rates over one election timeout, and for
/// the time between a lease check and the read it admits.
pub(crate) const DRIFT_MARGIN: Duration = Duration::from_millis(50);

/// How long a lease lasts from the send time of the request a quorum acknowledged.
pub(crate) const LEASE: Duration = ELECTION_TIMEOUT_MIN.saturating_sub(DRIFT_MARGIN);

/// openraft's metrics of one group.
pub(crate) type Metrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// Whether `me` leads in the term of the last entry its state machine applied: the first entry of a term
/// is its leader's, so everything earlier terms committed is applied.
pub(crate) fn applied_in_term(m: &Metrics, me: NodeId) -> bool {
    m.state == openraft::ServerState::Leader
        && m.current_leader == Some(me)
        && m.last_applied.is_some_and(|id| id.leader_id.term == m.current_term)
}

/// The lease bookkeeping of one group on this node.
pub(crate) struct Lease {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per follower: the term and send time of the newest AppendEntries it accepted.
    acks: BTreeMap<NodeId, (u64, Instant)>,
    /// The last revocation: acknowledgements of requests sent before it do not count.
    revoked_at: Option<Instant>,
    /// When this replica last received an AppendEntries (it was then a follower of the sender).
    heard_from_leader: Option<Instant>,
}

impl Lease {
    pub(crate) fn new() -> Self {
        Lease { started: Instant::now(), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data, valid after any panic that poisoned it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `target` accepted, in `term`, an AppendEntries this node sent at `sent`.
    pub(crate) fn acknowledged(&self, target: NodeId, term: u64, sent: Instant) {
        let mut st = self.state();
        let slot = st.acks.entry(target).or_insert((term, sent));
        if (term, sent) > *slot {
            *slot = (term, sent);
        }
    }

    /// Ends the lease now.
    pub(crate) fn revoke(&self) {
        self.state().revoked_at = Some(Instant::now());
    }

    /// An AppendEntries arrived from another node: it leads, or believes it does.
    pub(crate) fn heard_from_leader(&self) {
        let mut st = self.state();
        let now = Instant::now();
        st.heard_from_leader = Some(now);
        st.revoked_at = Some(now);
    }

    /// How long since this replica last received an AppendEntries; `None` if it never did.
    pub(crate) fn since_leader(&self) -> Option<Duration> {
        self.state().heard_from_leader.map(|t| t.elapsed())
    }

    /// How long since this replica last received an AppendEntries, or since it started if it never did:
    /// what it may have accepted before a restart is as old as that at most.
    pub(crate) fn since_leader_or_start(&self) -> Duration {
        self.state().heard_from_leader.map_or_else(|| self.started.elapsed(), |t| t.elapsed())
    }

    /// Whether this replica still refuses every vote: for the longest election timeout after it started,
    /// since the vote lease it granted before a restart is not on disk.
    pub(crate) fn votes_held(&self) -> bool {
        self.started.elapsed() < LEADER_LEASE
    }

    /// Whether node `me` may serve a read without a quorum round, by its group's metrics `m`: it leads and
    /// has applied its term's first entry, the membership is not changing, and its lease holds.
    pub(crate) fn holds_for(&self, m: &Metrics, me: NodeId) -> bool {
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() != 1 || !applied_in_term(m, me) {
            return false;
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        self.holds(me, m.current_term, &voters)
    }

    /// Whether the lease of this node, leader in `term` with `voters` (this node among them), holds now.
    pub(crate) fn holds(&self, me: NodeId, term: u64, voters: &[NodeId]) -> bool {
        self.holds_at(me, term, voters, Instant::now())
    }

    fn holds_at(&self, me: NodeId, term: u64, voters: &[NodeId], now: Instant) -> bool {
        if !voters.contains(&me) {
            return false;
        }
        let needed = voters.len() / 2; // a majority, this node included
        if needed == 0 {
            return true;
        }
        let st = self.state();
        let mut sent: Vec<Instant> = voters
            .iter()
            .filter(|v| **v != me)
            .filter_map(|v| st.acks.get(v))
            .filter(|(t, at)| *t == term && st.revoked_at.is_none_or(|r| *at > r))
            .map(|(_, at)| *at)
            .collect();
        if sent.len() < needed {
            return false;
        }
        sent.sort_unstable_by(|a, b| b.cmp(a));
        now < sent[needed - 1] + LEASE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;
    const VOTERS: [NodeId; 3] = [1, 2, 3];

    #[test]
    fn a_quorum_acknowledgement_starts_a_lease_that_ends() {
        let lease = Lease::new();
        let sent = Instant::now();
        assert!(!lease.holds_at(ME, 4, &VOTERS, sent), "no acknowledgement, no lease");
        lease.acknowledged(2, 4, sent);
        assert!(lease.holds_at(ME, 4, &VOTERS, sent + LEASE / 2));
        assert!(!lease.holds_at(ME, 4, &VOTERS, sent + LEASE), "it ends LEASE after the send time");
        assert!(!lease.holds_at(ME, 5, &VOTERS, sent), "an acknowledgement of another term does not count");
        assert!(!lease.holds_at(4, 4, &VOTERS, sent), "a node that is no voter holds none");
    }

    #[test]
    fn five_voters_need_two_acknowledgements_and_the_older_one_bounds_the_lease() {
        let lease = Lease::new();
        let voters = [1, 2, 3, 4, 5];
        let t0 = Instant::now();
        lease.acknowledged(2, 1, t0);
        assert!(!lease.holds_at(ME, 1, &voters, t0));
        lease.acknowledged(3, 1, t0 + Duration::from_millis(100));
        assert!(lease.holds_at(ME, 1, &voters, t0 + LEASE - Duration::from_millis(1)));
        assert!(!lease.holds_at(ME, 1, &voters, t0 + LEASE), "bounded by the older of the two");
    }

    #[test]
    fn a_revocation_voids_earlier_acknowledgements_only() {
        let lease = Lease::new();
        let before = Instant::now();
        lease.acknowledged(2, 1, before);
        lease.revoke();
        let now = Instant::now();
        assert!(!lease.holds_at(ME, 1, &VOTERS, now));
        let after = Instant::now() + Duration::from_millis(1);
        lease.acknowledged(3, 1, after);
        assert!(lease.holds_at(ME, 1, &VOTERS, after));
    }

    #[test]
    fn hearing_from_another_leader_revokes_the_lease() {
        let lease = Lease::new();
        let sent = Instant::now();
        lease.acknowledged(2, 1, sent);
        assert!(lease.holds_at(ME, 1, &VOTERS, sent) && lease.since_leader().is_none());
        lease.heard_from_leader();
        assert!(!lease.holds_at(ME, 1, &VOTERS, sent));
        assert!(lease.since_leader().is_some());
    }

    #[test]
    fn an_older_acknowledgement_never_replaces_a_newer_one() {
        let lease = Lease::new();
        let t0 = Instant::now();
        lease.acknowledged(2, 1, t0 + Duration::from_millis(100));
        lease.acknowledged(2, 1, t0);
        assert!(lease.holds_at(ME, 1, &VOTERS, t0 + LEASE + Duration::from_millis(50)));
    }

    #[test]
    fn a_group_of_one_always_holds_and_votes_are_held_after_start() {
        assert!(Lease::new().holds_at(ME, 1, &[ME], Instant::now()));
        assert!(Lease::new().votes_held());
    }
}
