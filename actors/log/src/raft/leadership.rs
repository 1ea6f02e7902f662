//! Follows a group's openraft metrics: publishes its [`Leadership`] on a watch channel the moment it
//! changes (so the shard actor can stop its entities as soon as this node is deposed), keeps the
//! `playground_raft_*` gauges, and samples the commit index, which openraft's metrics do not carry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use tokio::sync::watch;

use playground_proto::{NodeId, ShardId};

use super::quiet::Quiet;
use super::{metrics, TypeConfig};
use crate::store::Leadership;

/// How often the commit index (and with it the apply lag) is sampled.
const COMMIT_SAMPLE: Duration = Duration::from_secs(1);
/// A leader that has heard from no quorum for this long (longer than the longest election timeout, so
/// the others have most likely elected a new leader) stops accepting appends and read checks instead of
/// queueing them behind proposals that cannot commit. It still leads as far as openraft is concerned.
pub(crate) const STALE_LEADER: Duration = Duration::from_millis(1000);

/// What the group's follower task keeps up to date for the log's handle.
#[derive(Default)]
pub(crate) struct Observed {
    /// The last commit index seen (sampled).
    pub(crate) committed: AtomicU64,
    /// Set while this node leads but no quorum has acknowledged it for `STALE_LEADER`.
    pub(crate) stale: AtomicBool,
    /// The term this node last led in, and when it first saw itself lead in it.
    pub(crate) elected: std::sync::Mutex<Option<(u64, Instant)>>,
}

impl Observed {
    /// How long this node has led in `term`, as far as this task has seen.
    pub(crate) fn leading_for(&self, term: u64) -> Option<Duration> {
        let elected = *self.elected.lock().unwrap_or_else(|p| p.into_inner());
        elected.filter(|(t, _)| *t == term).map(|(_, at)| at.elapsed())
    }
}

/// The name of node `id`: from the group's membership, else from the replicas placement gave it.
pub(crate) fn name_of(
    id: NodeId,
    metrics: &RaftMetrics<NodeId, BasicNode>,
    names: &BTreeMap<NodeId, String>,
) -> Option<String> {
    metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).or_else(|| names.get(&id).cloned())
}

/// The leadership openraft's metrics describe, as node `me` sees it.
pub(crate) fn leadership_of(
    me: NodeId,
    metrics: &RaftMetrics<NodeId, BasicNode>,
    names: &BTreeMap<NodeId, String>,
) -> Leadership {
    Leadership {
        term: metrics.current_term,
        is_leader: metrics.state == ServerState::Leader && metrics.current_leader == Some(me),
        leader: metrics.current_leader.and_then(|id| name_of(id, metrics, names)),
    }
}

/// Runs until the group stops (its metrics channel closes).
pub(crate) async fn follow(
    shard: ShardId,
    me: NodeId,
    names: BTreeMap<NodeId, String>,
    raft: Raft<TypeConfig>,
    tx: watch::Sender<Leadership>,
    observed: Arc<Observed>,
    quiet: Arc<Quiet>,
) {
    let label = shard.to_string();
    let (term_gauge, leader_gauge, lag_gauge) = (
        metrics::TERM.with_label_values(&[&label]),
        metrics::IS_LEADER.with_label_values(&[&label]),
        metrics::APPLY_LAG.with_label_values(&[&label]),
    );
    let mut rx = raft.metrics();
    let mut sample = tokio::time::interval(COMMIT_SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (next, applied, stale) = {
            let m = rx.borrow_and_update();
            let stale = m.millis_since_quorum_ack.is_some_and(|ms| ms > STALE_LEADER.as_millis() as u64);
            (leadership_of(me, &m, &names), m.last_applied.map(|id| id.index).unwrap_or(0), stale)
        };
        observed.stale.store(next.is_leader && stale, Ordering::Relaxed);
        term_gauge.set(next.term as i64);
        leader_gauge.set(i64::from(next.is_leader));
        tx.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            if next.is_leader && (current.term, current.is_leader) != (next.term, true) {
                *observed.elected.lock().unwrap_or_else(|p| p.into_inner()) = Some((next.term, Instant::now()));
            }
            if next.leader.is_some() && (next.term, &next.leader) != (current.term, &current.leader) {
                metrics::LEADER_CHANGES.with_label_values(&[&label]).inc();
                let (term, leader, is_leader) = (next.term, &next.leader, next.is_leader);
                tracing::info!(shard, term, ?leader, is_leader, "shard leader");
            }
            *current = next;
            true
        });
        observed.committed.fetch_max(applied, Ordering::Relaxed);
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = sample.tick() => {
                // Sampling asks the group's core, which a quiet group would wake for nothing: nothing
                // commits while it is quiet.
                if quiet.is_quiet() {
                    continue;
                }
                match raft.with_raft_state(|s| s.committed.map(|c| c.index)).await {
                    Ok(Some(index)) => {
                        observed.committed.fetch_max(index, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                lag_gauge.set(observed.committed.load(Ordering::Relaxed).saturating_sub(applied) as i64);
            }
        }
    }
    leader_gauge.set(0);
    tx.send_if_modified(|current| {
        let was = current.is_leader;
        current.is_leader = false;
        was
    });
}
