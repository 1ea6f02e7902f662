//! Quiet groups: a group nobody uses sends no heartbeats and runs no timers; the node's failure
//! detector stands in for them, as in TiKV's hibernated regions and CockroachDB's quiesced ranges.
//!
//! openraft runs a timer and, on a leader, a heartbeat round per group: with 65 groups on a node that
//! is over 1,000 messages a second and as many wake-ups of each group's core and its metrics watchers,
//! with no request in sight. One task per node ([`run`]) looks at every group every [`SCAN`] and sets
//! openraft's switches (`runtime_config().tick`, `.heartbeat`, `.elect`) by [`plan`]:
//!
//! - **A leader** keeps its timer and heartbeats while the group is busy: used in the last
//!   [`QUIET_AFTER`], a follower not caught up, a membership change under way. Idle, it stops both and
//!   sends one heartbeat round per [`QUIET_BEAT`] instead, which carries the commit index and tells the
//!   followers it is alive. The first request after that wakes it ([`Quiet::touch`]); its lease has run
//!   out meanwhile, so the first read pays a read-index round, as after any pause.
//! - **A follower** keeps openraft's timers while its leader sends heartbeats. Once it has not heard
//!   from it for [`LEADER_WENT_QUIET`], it runs no timer at all while its leader is a voter that the
//!   failure detector holds up and that was heard from within [`QUIET_SILENCE`]. As soon as the
//!   detector suspects the leader's node (one missed ping), the follower runs openraft's timers again,
//!   which count from the last AppendEntries: a frozen leader is replaced as fast as without quiet
//!   groups. When the detector holds the node down (its connection closed, or silent for
//!   `cluster.failure_timeout`), the follower stands for election as soon as the leader's vote lease
//!   has run out since it last heard from it, [`ELECTION_JITTER`] apart from its peers, instead of
//!   waiting out openraft's random election timeout on top of the lease; before that it starts none on
//!   openraft's timer either: the other followers would refuse it, and it would only raise the term
//!   past a leader whose node restarted within the lease (openraft restores a leader at startup, which
//!   then leads on from its log). A leader's node that comes back up before this replica heard from a
//!   leader again counts as down: if it does not lead on, the group must not fall asleep waiting for it.
//! - **The silence bound** is the safety net for whatever the detector cannot see (a leader whose
//!   process answers pings while its group is wedged): a follower that has not heard from its leader
//!   for [`QUIET_SILENCE`] runs openraft's own timers again, and they elect.
//!
//! The switches change when a node may stand for election, never what it votes or commits: safety is
//! openraft's, and the lease argument (`lease.rs`) holds because a triggered election waits at least as
//! long after the last AppendEntries as openraft's own timer would.
//!
//! A transport without a failure detector ([`RaftTransport::reachability`] answers `None`) keeps every
//! group on openraft's own timers, as does `cluster.quiet_groups = false`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;

use playground_proto::{node_id_of, NodeId, ShardId};

use super::group::Group;
use super::lease::Metrics;
use super::settings::LEADER_LEASE;
use super::{leadership, metrics, RaftLog, Reachability};

/// How often the groups are looked at: the delay between the detector holding a leader down and its
/// followers acting on it.
pub(crate) const SCAN: Duration = Duration::from_millis(100);
/// A leader's group goes quiet after this long without a request.
pub(crate) const QUIET_AFTER: Duration = Duration::from_secs(2);
/// A quiet leader's heartbeat round, one per this interval.
pub(crate) const QUIET_BEAT: Duration = Duration::from_secs(2);
/// A follower that has not heard from its leader for this long runs openraft's timers again.
pub(crate) const QUIET_SILENCE: Duration = Duration::from_secs(5);
/// A follower that has not heard from its leader for this long, while the detector holds the leader's
/// node up, takes it that the leader went quiet. Three heartbeat intervals: a leader in use is heard
/// from well within it, and it ends well before openraft's own election timer would fire (the vote
/// lease and at least the shortest election timeout).
pub(crate) const LEADER_WENT_QUIET: Duration = Duration::from_millis(300);
/// The followers of a lost leader stand for election spread over this much, so that one usually wins
/// the first round.
pub(crate) const ELECTION_JITTER: Duration = Duration::from_millis(200);

/// The quiet state of one group on this node.
pub(crate) struct Quiet {
    /// Whether this group may go quiet at all.
    enabled: bool,
    born: Instant,
    /// Milliseconds since `born` of the last request this node served for the group as its leader.
    touched: AtomicU64,
    /// Whether openraft's timer (and with it heartbeats and elections) runs.
    ticking: AtomicBool,
    /// Milliseconds since `born` when `ticking` last changed.
    ticking_since: AtomicU64,
    /// Milliseconds since `born` of the last quiet heartbeat round.
    last_beat: AtomicU64,
    /// The term in which this replica last stood for election because its leader was held down.
    campaigned_in: AtomicU64,
    /// Milliseconds since `born` when a scan last saw the leader's node not up after it had been up;
    /// `u64::MAX`: never. (A node's peers are down until they first answer, which is no loss.)
    leader_lost: AtomicU64,
    /// Whether a scan has seen the leader's node up.
    leader_seen_up: AtomicBool,
}

impl Quiet {
    pub(crate) fn new(enabled: bool) -> Self {
        Quiet {
            enabled,
            born: Instant::now(),
            touched: AtomicU64::new(0),
            ticking: AtomicBool::new(true),
            ticking_since: AtomicU64::new(0),
            last_beat: AtomicU64::new(0),
            campaigned_in: AtomicU64::new(u64::MAX),
            leader_lost: AtomicU64::new(u64::MAX),
            leader_seen_up: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn age(&self, at: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at.load(Ordering::Relaxed)))
    }

    /// The group is in use: a leader keeps its heartbeats for [`QUIET_AFTER`] from now.
    pub(crate) fn touch(&self) {
        self.touched.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether openraft's timer has run for at least `d` without a break: until then a leader that has
    /// not heard from a quorum may simply have been quiet.
    pub(crate) fn ticking_for(&self, d: Duration) -> bool {
        !self.enabled || (self.ticking.load(Ordering::Relaxed) && self.age(&self.ticking_since) >= d)
    }

    /// Whether this replica has heard from a leader since a scan last saw its leader's node not up, by
    /// how long ago it last heard from one.
    fn heard_since_lost(&self, since_leader: Duration) -> bool {
        let lost = self.leader_lost.load(Ordering::Relaxed);
        lost == u64::MAX || since_leader < self.age(&self.leader_lost)
    }

    /// Whether the group is quiet now.
    pub(crate) fn is_quiet(&self) -> bool {
        !self.ticking.load(Ordering::Relaxed)
    }
}

/// What [`plan`] looks at, for one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub(crate) leading: bool,
    /// Leader only: in use, or with replication or a membership change under way.
    pub(crate) busy: bool,
    /// Leader only: handing leadership over ([`RaftLog::hand_over`]).
    pub(crate) handing_over: bool,
    /// Follower only: its leader is known, a voter, not this node, and the detector holds it up (not
    /// suspect).
    pub(crate) leader_up: bool,
    /// Follower only: its leader is known and the detector holds it down.
    pub(crate) leader_down: bool,
    /// Follower only: since it last heard from a leader (or started, if it never did).
    pub(crate) since_leader: Duration,
    /// Leader only: since its last quiet heartbeat round.
    pub(crate) since_beat: Duration,
    /// Follower only: it stood for election in this term already.
    pub(crate) campaigned: bool,
    /// Follower only: this replica's share of [`ELECTION_JITTER`].
    pub(crate) jitter: Duration,
}

/// What to do with one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) tick: bool,
    pub(crate) heartbeat: bool,
    pub(crate) elect: bool,
    /// Send one heartbeat round now.
    pub(crate) beat: bool,
    /// Stand for election now.
    pub(crate) campaign: bool,
}

pub(crate) fn plan(v: &View) -> Plan {
    if v.leading {
        let awake = v.busy || v.handing_over;
        return Plan {
            tick: awake,
            heartbeat: awake && !v.handing_over,
            elect: true,
            beat: !awake && v.since_beat >= QUIET_BEAT,
            campaign: false,
        };
    }
    let quiet = v.leader_up && (LEADER_WENT_QUIET..QUIET_SILENCE).contains(&v.since_leader);
    // Within the vote lease the other followers refuse: an election started by openraft's own timer
    // then only raises the term, and deposes a leader whose node restarted within the lease and leads
    // on from its log (openraft restores a leader at startup).
    let doomed = v.leader_down && v.since_leader < LEADER_LEASE;
    Plan {
        tick: !quiet,
        heartbeat: true,
        elect: !quiet && !doomed,
        beat: false,
        campaign: v.leader_down && !v.campaigned && v.since_leader >= LEADER_LEASE + v.jitter,
    }
}

/// Whether the group led by `me` has work under way besides requests: replication to catch up, entries
/// not applied, a membership change, learners, or a leader removed from the voters (it steps down on a
/// tick of its timer).
fn replicating(m: &Metrics, me: NodeId) -> bool {
    let membership = m.membership_config.membership();
    let last = m.last_log_index;
    membership.get_joint_config().len() != 1
        || membership.learner_ids().next().is_some()
        || !membership.voter_ids().any(|v| v == me)
        || m.last_applied.map(|id| id.index) != last
        || m.replication.as_ref().is_none_or(|r| r.values().any(|matched| matched.map(|id| id.index) != last))
}

/// This replica's delay within [`ELECTION_JITTER`] in `term`: differs between nodes and between terms.
fn jitter(me: NodeId, shard: ShardId, term: u64) -> Duration {
    let mut x = me ^ (u64::from(shard) << 32) ^ term.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    ELECTION_JITTER.mul_f64((x % 1000) as f64 / 1000.0)
}

/// Looks at every group every [`SCAN`] until the log is dropped or shut down.
pub(crate) async fn run(log: Weak<RaftLog>) {
    let mut scan = tokio::time::interval(SCAN);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        scan.tick().await;
        let Some(log) = log.upgrade() else { return };
        let mut quiet = 0;
        // Most groups share a few leaders: each is looked up once a scan.
        let mut seen = HashMap::new();
        for (shard, group) in log.local() {
            settle(&log, shard, &group, &mut seen).await;
            quiet += i64::from(group.quiet.is_quiet());
        }
        metrics::QUIET_GROUPS.set(quiet);
    }
}

async fn settle(log: &RaftLog, shard: ShardId, g: &Arc<Group>, seen: &mut HashMap<NodeId, Option<Reachability>>) {
    let q = &g.quiet;
    if !q.enabled {
        return;
    }
    let me = node_id_of(log.node());
    let view = {
        let m = g.metrics.borrow();
        let leading = m.state == ServerState::Leader && m.current_leader == Some(me);
        let leader = m.current_leader.filter(|l| *l != me);
        let voter = |id: NodeId| m.membership_config.membership().voter_ids().any(|v| v == id);
        let held = leader.and_then(|l| {
            *seen.entry(l).or_insert_with(|| leadership::name_of(l, &m, &g.names).and_then(|n| log.reachability(&n)))
        });
        match held {
            Some(Reachability::Up) => q.leader_seen_up.store(true, Ordering::Relaxed),
            Some(_) if q.leader_seen_up.load(Ordering::Relaxed) => q.leader_lost.store(q.now_ms(), Ordering::Relaxed),
            _ => {}
        }
        let since_leader = g.lease.since_leader_or_start();
        // Up again, but not heard from since it was lost: a restarted node that leads no more.
        let back_unheard = held == Some(Reachability::Up) && !q.heard_since_lost(since_leader);
        let handing_over = g
            .handing_over
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|(until, _)| *until))
            .is_some_and(|until| Instant::now() < until);
        View {
            leading,
            busy: leading && (q.age(&q.touched) < QUIET_AFTER || replicating(&m, me)),
            handing_over: leading && handing_over,
            leader_up: leader.is_some_and(voter) && held == Some(Reachability::Up) && !back_unheard,
            leader_down: held == Some(Reachability::Down) || back_unheard,
            since_leader,
            since_beat: q.age(&q.last_beat),
            campaigned: q.campaigned_in.load(Ordering::Relaxed) == m.current_term,
            jitter: jitter(me, shard, m.current_term),
        }
    };
    let p = plan(&view);
    let config = g.raft.runtime_config();
    config.heartbeat(p.heartbeat);
    config.elect(p.elect);
    config.tick(p.tick);
    if q.ticking.swap(p.tick, Ordering::Relaxed) != p.tick {
        q.ticking_since.store(q.now_ms(), Ordering::Relaxed);
        tracing::debug!(shard, quiet = !p.tick, "group timers");
    }
    if p.beat {
        q.last_beat.store(q.now_ms(), Ordering::Relaxed);
        let _ = g.raft.trigger().heartbeat().await;
    }
    if p.campaign {
        q.campaigned_in.store(g.metrics.borrow().current_term, Ordering::Relaxed);
        tracing::info!(shard, "the leader's node is down: standing for election");
        metrics::DETECTED_ELECTIONS.inc();
        let _ = g.raft.trigger().elect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> View {
        View {
            leading: false,
            busy: false,
            handing_over: false,
            leader_up: true,
            leader_down: false,
            since_leader: Duration::from_millis(500),
            since_beat: Duration::ZERO,
            campaigned: false,
            jitter: Duration::from_millis(50),
        }
    }

    fn leader(busy: bool) -> View {
        View { leading: true, busy, leader_up: false, ..follower() }
    }

    #[test]
    fn a_busy_leader_beats_and_an_idle_one_sleeps_but_beats_now_and_then() {
        let p = plan(&leader(true));
        assert!(p.tick && p.heartbeat && !p.beat);
        let p = plan(&leader(false));
        assert!(!p.tick && !p.heartbeat && !p.beat);
        let p = plan(&View { since_beat: QUIET_BEAT, ..leader(false) });
        assert!(!p.tick && p.beat, "a quiet leader's round every QUIET_BEAT");
    }

    #[test]
    fn a_leader_handing_over_keeps_its_timer_but_sends_no_heartbeats() {
        let p = plan(&View { handing_over: true, ..leader(false) });
        assert!(p.tick && !p.heartbeat && !p.beat && !p.campaign);
    }

    #[test]
    fn a_follower_of_a_live_leader_sleeps_until_the_leader_falls_silent() {
        let p = plan(&follower());
        assert!(!p.tick && !p.elect && !p.campaign);
        let p = plan(&View { since_leader: Duration::from_millis(100), ..follower() });
        assert!(p.tick && p.elect, "a leader that heartbeats: openraft's timers, as without quiet groups");
        let p = plan(&View { since_leader: QUIET_SILENCE, ..follower() });
        assert!(p.tick && p.elect && !p.campaign, "openraft's timers take over after the silence bound");
        let p = plan(&View { leader_up: false, ..follower() });
        assert!(p.tick && p.elect, "no leader known, or one that is no voter: openraft's timers");
    }

    #[test]
    fn a_follower_of_a_leader_held_down_stands_once_the_vote_lease_is_over() {
        let down = View { leader_up: false, leader_down: true, ..follower() };
        let p = plan(&down);
        assert!(p.tick && !p.elect && !p.campaign, "not while the voters may still refuse");
        let late = View { since_leader: LEADER_LEASE + down.jitter, ..down };
        assert!(plan(&late).campaign && plan(&late).elect, "then at once, and on openraft's timer if that fails");
        assert!(!plan(&View { campaigned: true, ..late }).campaign, "once per term");
        assert!(!plan(&View { jitter: ELECTION_JITTER, ..late }).campaign, "after its own jitter");
    }

    #[test]
    fn jitter_spreads_the_replicas_of_a_group() {
        let spread: std::collections::BTreeSet<Duration> = (1..=3).map(|me| jitter(me * 7919, 5, 9)).collect();
        assert_eq!(spread.len(), 3);
        assert!(spread.iter().all(|j| *j < ELECTION_JITTER));
        assert_ne!(jitter(1, 5, 9), jitter(1, 5, 10), "a new term, a new draw");
    }
}
