//! Each shard's log as an openraft group replicated across nodes: [`RaftLog`] implements [`ShardLog`] so
//! that entities cannot tell it from [`LocalLog`](crate::store::LocalLog), except that only the shard's
//! leader accepts appends (others answer [`StoreError::NotLeader`]).
//!
//! - `group`: one group on this node (its openraft handle, tasks, lease and quiet state), how it starts,
//!   and `check_leader`, which every leader-side call asks first.
//! - `proposer`: one task per shard packs the waiting [`LogEntry`]s into one raft entry and proposes it
//!   with one `client_write` as soon as the previous one is applied, never on a timer (openraft 0.9
//!   flushes once per entry, so packing is where the throughput comes from).
//! - `reads`: one task per shard runs read-index checks (`ensure_linearizable`), coalescing concurrent ones.
//! - `leadership`: follows each group's metrics; publishes its leadership on a watch channel; gauges.
//! - `log_store`: the raft log and vote in sled, tree `raft-log-{n}`. Appends go through the store's
//!   committer thread and are acknowledged to openraft after its `flush` + `fdatasync`, so the appends of
//!   all shards share one sync.
//! - `state_machine`: applies each packed entry to the shard's tree `shard-{n}` exactly as `LocalLog`
//!   does, and keeps the last applied log id and membership beside the data, in the same atomic batch.
//!   Snapshots are a dump of the shard's keys.
//! - `network`: raft RPC over a [`RaftTransport`] (the cluster transport, or an in-memory one in tests),
//!   and [`RaftLog::handle_rpc`]'s inbound side.
//! - `settings`: [`RaftSettings`] and the openraft configuration of every group.
//! - `quiet`: idle groups send no heartbeats and run no timers while the transport's failure detector
//!   watches their leaders; it also starts elections when the detector holds a leader's node down.
//! - `metrics`: `playground_raft_*`.
//!
//! Besides the shard groups, every cluster has one metadata group (the control plane's), id `shard_count`, on
//! [`META_REPLICATION`] nodes: the same machinery (log store, state machine, proposer) over the store's
//! `meta` tree. It has no shard actor and no entities; the control plane reads and writes its one record.

mod group;
mod leadership;
mod lease;
mod log_store;
mod metrics;
mod network;
mod proposer;
mod quiet;
mod reads;
mod settings;
mod state_machine;
#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use playground_proto::{node_id_of, placement, Applied, LogEntry, LogIndex, NodeId, Packed, ShardId};

use crate::error::StoreError;
use crate::store::{Leadership, ShardLog, Store};

use group::{quiet_groups, start_group, Group, Start};
use proposer::Proposal;

pub use network::{NoTransport, RaftTransport, Reachability};
pub use settings::RaftSettings;

/// Replicas of the metadata group (fewer when the cluster has fewer members), whatever the shards'
/// replication factor: it must survive what the shards survive, and three is enough for that.
pub const META_REPLICATION: usize = 3;

openraft::declare_raft_types!(
    /// The openraft types of a shard group. A member's `BasicNode::addr` is its node name, which is
    /// what the transport addresses.
    pub TypeConfig:
        D = Packed,
        R = Applied,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("shard {shard}: storage: {source}")]
    Store { shard: ShardId, source: StoreError },
    #[error("shard {shard}: raft: {reason}")]
    Raft { shard: ShardId, reason: String },
    #[error("shard {shard} has no leader after {waited:?}")]
    NoLeader { shard: ShardId, waited: Duration },
}

/// One shard group as this node sees it, from openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The leader's node name, when known.
    pub leader: Option<String>,
    pub term: u64,
    /// The last committed raft index known here (sampled every second; at least `last_applied`).
    pub commit_index: u64,
    /// The last raft index applied to this replica's state machine.
    pub last_applied: u64,
    /// Every member of the group, by node name.
    pub replicas: Vec<String>,
    pub is_leader: bool,
}

/// A handle every storage object of the groups holds a clone of, so that shutdown can wait until
/// openraft's tasks have dropped them all (and with them their sled trees, which keep the store's
/// directory locked).
#[derive(Clone)]
pub(crate) struct Alive {
    _held: mpsc::Sender<()>,
}

/// How long a leader holds still for a hand-over: the lease its followers wait out, then the election.
const HAND_OVER: Duration = Duration::from_millis(2000);
/// How long a leader handing over sends nothing to its successor before it lets it stand: the silence
/// [`RaftLog::campaign`] asks for, with a margin for the last message's way there.
const HANDED_SILENCE: Duration = settings::ELECTION_TIMEOUT_MIN.saturating_add(Duration::from_millis(50));

/// The [`ShardLog`] whose shards are openraft groups.
pub struct RaftLog {
    node: String,
    /// Indexed by group id: the shards, then the metadata group (id `shard_count`); `None` for the groups
    /// this node does not replicate. Replicas come and go at run time ([`RaftLog::open_replica`],
    /// [`RaftLog::close_replica`]).
    groups: RwLock<Vec<Option<Arc<Group>>>>,
    shard_count: u32,
    store: Arc<Store>,
    settings: RaftSettings,
    alive: Mutex<Option<(Alive, mpsc::Receiver<()>)>>,
    /// One replica opens or closes at a time, so that two calls for one group cannot race.
    changing: tokio::sync::Mutex<()>,
    /// The task that puts idle groups to sleep and wakes them (`quiet.rs`).
    quieting: Mutex<Option<JoinHandle<()>>>,
}

impl RaftLog {
    /// Starts this node's replicas, all at once, and returns when each has started; it does not wait for
    /// elections (peers may not be up yet: see [`RaftLog::all_have_leaders`]), except that a group whose
    /// only replica is this node elects itself first.
    ///
    /// - Every group this node left state of resumes from its log, vote and state machine; one whose
    ///   membership no longer holds this node (it was removed while this node was down) is wiped instead.
    /// - Until this node has known a cluster metadata record ([`Store::knows_cluster`]), the groups of the
    ///   first placement over `settings.members` (the seeds) that place it start too: a group that has
    ///   never run is initialized with its whole replica set by its first replica; the others wait to be
    ///   contacted. A node that is not among the seeds starts with no group and is given replicas later.
    pub async fn start(store: Arc<Store>, settings: RaftSettings) -> Result<Arc<RaftLog>, RaftStartError> {
        let mut members = settings.members.clone();
        members.sort();
        members.dedup();
        let ids: std::collections::BTreeSet<NodeId> = members.iter().map(|m| node_id_of(m)).collect();
        if ids.len() != members.len() {
            return Err(RaftStartError::Config(format!("two of the members {members:?} hash to one node id")));
        }
        let store_err = |shard: ShardId| move |source: StoreError| RaftStartError::Store { shard, source };
        let shard_count = store.shard_count();
        store.claim(&settings.node).await.map_err(|e| RaftStartError::Config(e.to_string()))?;
        let bootstrap = !store.knows_cluster().map_err(store_err(shard_count))?;
        let (tx, rx) = mpsc::channel(1);
        let alive = Alive { _held: tx };
        let mut plans = Vec::with_capacity(shard_count as usize + 1);
        for shard in 0..shard_count {
            // Entries applied without raft (the local log) exist on this node only: replicating on top of
            // them would leave the replicas disagreeing.
            let unreplicated = !store.has_group_state(shard).map_err(store_err(shard))?
                && store.applied_index(shard).map_err(store_err(shard))? > 0;
            if unreplicated && settings.replication_factor > 1 && members.len() > 1 {
                return Err(RaftStartError::Config(format!(
                    "shard {shard}: the data directory holds data written by a one-node cluster; a replicated \
                     cluster starts on a fresh data directory"
                )));
            }
        }
        for shard in 0..=shard_count {
            // The metadata group is placed like one more shard, by the same rule, so every node agrees on
            // its first replicas without having to read anything first.
            let rf = if shard == shard_count { META_REPLICATION } else { settings.replication_factor };
            let replicas = placement(shard, &members, rf);
            let plan = if store.has_group_state(shard).map_err(store_err(shard))? {
                Some(Start::Resume)
            } else if bootstrap && replicas.contains(&settings.node) {
                Some(Start::Bootstrap(replicas))
            } else {
                None
            };
            plans.push(plan);
        }
        let starts = plans.into_iter().enumerate().map(|(shard, plan)| {
            let (store, settings, alive) = (store.clone(), &settings, alive.clone());
            async move {
                match plan {
                    Some(plan) => start_group(store, shard as ShardId, plan, settings, alive).await,
                    None => Ok(None),
                }
            }
        });
        let groups = futures::future::try_join_all(starts).await?.into_iter().map(|g| g.map(Arc::new)).collect();
        let log = Arc::new(RaftLog {
            node: settings.node.clone(),
            groups: RwLock::new(groups),
            shard_count,
            store,
            settings,
            alive: Mutex::new(Some((alive, rx))),
            changing: tokio::sync::Mutex::new(()),
            quieting: Mutex::new(None),
        });
        if quiet_groups(&log.settings) {
            let task = tokio::spawn(quiet::run(Arc::downgrade(&log)));
            if let Ok(mut quieting) = log.quieting.lock() {
                *quieting = Some(task);
            }
        }
        Ok(log)
    }

    /// How the transport's failure detector holds node `node`; `None` without one.
    fn reachability(&self, node: &str) -> Option<Reachability> {
        self.settings.transport.reachability(node)
    }

    /// Opens an empty replica of group `shard` on this node, to be added to the group as a learner by
    /// its leader; does nothing if this node holds one already. Whatever an earlier replica here left
    /// behind is erased first: the new one catches up from the leader alone.
    pub async fn open_replica(&self, shard: ShardId) -> Result<(), RaftStartError> {
        if shard > self.shard_count {
            return Err(RaftStartError::Config(format!("no group {shard}")));
        }
        let _one = self.changing.lock().await;
        if self.group(shard).is_some() {
            return Ok(());
        }
        let alive = self.alive.lock().ok().and_then(|a| a.as_ref().map(|(alive, _)| alive.clone()));
        let alive = alive.ok_or_else(|| RaftStartError::Config("the node is shutting down".into()))?;
        let store_err = |source| RaftStartError::Store { shard, source };
        // A node whose replicas change is past the cluster's bootstrap for good (see `RaftLog::start`).
        self.store.set_knows_cluster().await.map_err(store_err)?;
        self.store.wipe_group(shard).await.map_err(store_err)?;
        let group = start_group(self.store.clone(), shard, Start::Join, &self.settings, alive).await?;
        if let (Some(group), Ok(mut groups)) = (group, self.groups.write()) {
            groups[shard as usize] = Some(Arc::new(group));
        }
        tracing::info!(shard, "replica opened, waiting for the leader");
        Ok(())
    }

    /// On the group's leader: makes `voters` (node names) the group's replicas, with openraft's
    /// membership changes: each new one is added as a learner and caught up (by log or snapshot), then
    /// the voters are replaced at once (a joint configuration, then the new one), so that a quorum of the
    /// old and of the new set agrees at every step and no acknowledged entry is lost. Safe to repeat: a
    /// change cut short (a leader lost mid-way leaves the joint configuration) is finished by calling it
    /// again on the new leader. The new replicas must have been opened ([`RaftLog::open_replica`]).
    pub async fn change_replicas(&self, shard: ShardId, voters: &[String], within: Duration) -> Result<(), StoreError> {
        let group = self.group(shard).ok_or(StoreError::NotLeader { shard, leader: None })?;
        group.check_leader(shard)?;
        let failed = |e: &dyn std::fmt::Display| StoreError::Io(format!("shard {shard}: membership change: {e}"));
        let current: Vec<NodeId> = group.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let work = async {
            for name in voters {
                let id = node_id_of(name);
                if !current.contains(&id) {
                    group.raft.add_learner(id, BasicNode::new(name), true).await.map_err(|e| failed(&e))?;
                }
            }
            let ids: std::collections::BTreeSet<NodeId> = voters.iter().map(|n| node_id_of(n)).collect();
            group.raft.change_membership(ids.clone(), false).await.map_err(|e| failed(&e))?;
            // Learners of a move that was given up on (the plan changed meanwhile) would be fed forever.
            let stray: std::collections::BTreeSet<NodeId> = group
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .learner_ids()
                .filter(|id| !ids.contains(id))
                .collect();
            if !stray.is_empty() {
                let remove = openraft::ChangeMembers::RemoveNodes(stray);
                group.raft.change_membership(remove, false).await.map_err(|e| failed(&e))?;
            }
            Ok(())
        };
        tokio::time::timeout(within, work).await.map_err(|_| failed(&format!("not done within {within:?}")))?
    }

    /// On the shard's leader: gets ready to hand leadership to `to`. It takes no new work (callers are
    /// pointed at `to`), gives up its lease, stops its heartbeats, and returns once `to` can win the
    /// election ([`RaftLog::campaign`]) the caller asks of it next: once `to` holds every entry this
    /// node has and knows it committed, has heard nothing from this node for the time `campaign` asks
    /// of it, and this node's own vote is older than openraft's vote lease. This leader then grants `to`
    /// its vote, which with `to`'s own is a majority of three whatever the third replica's vote lease
    /// says, so the group changes leaders in one round trip, without waiting out the followers' leases.
    /// If `to` does not take over, this node leads on: heartbeats and work resume by themselves after
    /// `HAND_OVER` (2 s).
    pub async fn hand_over(&self, shard: ShardId, to: &str) -> Result<(), StoreError> {
        let group = self.group(shard).ok_or(StoreError::NotLeader { shard, leader: None })?;
        group.check_leader(shard)?;
        if let Ok(mut h) = group.handing_over.lock() {
            *h = Some((std::time::Instant::now() + HAND_OVER, to.to_owned()));
        }
        group.lease.revoke();
        group.raft.runtime_config().heartbeat(false);
        let raft = group.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HAND_OVER).await;
            raft.runtime_config().heartbeat(true);
        });
        let target = node_id_of(to);
        // Past this, `to` could not have won in the followers' eyes either: the wait the hand-over had
        // before it knew about this leader's own vote.
        let until = std::time::Instant::now() + settings::LEADER_LEASE + Duration::from_millis(50);
        let mut metrics = group.metrics.clone();
        // Since when `to` has been caught up: the last entry and the commit index it learns of once this
        // node applied that entry leave right then, and nothing follows them with heartbeats off.
        let mut silent_since = None;
        loop {
            let (caught_up, vote_old) = {
                let m = metrics.borrow_and_update();
                let last = m.last_log_index;
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten());
                let caught_up =
                    matched.is_some_and(|id| Some(id.index) == last) && m.last_applied.map(|id| id.index) == last;
                let vote_old = group
                    .observed
                    .leading_for(m.current_term)
                    .is_some_and(|led| led > settings::LEADER_LEASE + Duration::from_millis(20));
                (caught_up, vote_old)
            };
            let now = std::time::Instant::now();
            if caught_up {
                silent_since.get_or_insert(now);
            } else {
                silent_since = None;
            }
            let silent = silent_since.is_some_and(|t| now.duration_since(t) >= HANDED_SILENCE);
            let left = until.saturating_duration_since(now);
            if (silent && vote_old) || left.is_zero() {
                return Ok(());
            }
            if let Ok(Err(_)) = tokio::time::timeout(left.min(Duration::from_millis(20)), metrics.changed()).await {
                // The group stopped meanwhile: there is nothing left to hand over.
                return Err(StoreError::Closed);
            }
        }
    }

    /// Asks this node's replica of `shard` to stand for election now: how leadership moves to it, right
    /// after its leader handed over ([`RaftLog::hand_over`]), whose vote it then gets.
    pub async fn campaign(&self, shard: ShardId) -> Result<(), StoreError> {
        let group = self.group(shard).ok_or(StoreError::NotLeader { shard, leader: None })?;
        // A leader heard from lately may be serving reads on its lease: it did not hand over (or has
        // taken leadership back since), and this replica with one that never acknowledged that lease
        // could elect another leader before it ends. So it stands only once that lease has run out.
        if group.lease.since_leader().is_some_and(|quiet| quiet < settings::ELECTION_TIMEOUT_MIN) {
            let leader = group.leadership.borrow().leader.clone();
            return Err(StoreError::NotLeader { shard, leader });
        }
        group.quiet.touch();
        group.raft.trigger().elect().await.map_err(|e| StoreError::Io(format!("shard {shard}: election: {e}")))
    }

    /// Whether this node is in `shard`'s membership it has applied, as a voter or a learner.
    pub fn is_member(&self, shard: ShardId) -> bool {
        let me = node_id_of(&self.node);
        self.group(shard)
            .is_some_and(|g| g.raft.metrics().borrow().membership_config.membership().get_node(&me).is_some())
    }

    /// Whether this node is a voter of `shard` in the membership it has applied.
    pub fn is_voter(&self, shard: ShardId) -> bool {
        let me = node_id_of(&self.node);
        self.group(shard)
            .is_some_and(|g| g.raft.metrics().borrow().membership_config.membership().voter_ids().any(|id| id == me))
    }

    /// Stops this node's replica of group `shard` and erases it, once the group no longer counts it
    /// (the caller checks the committed membership). Does nothing if there is none.
    pub async fn close_replica(&self, shard: ShardId) -> Result<(), StoreError> {
        let _one = self.changing.lock().await;
        let group = self.groups.write().ok().and_then(|mut g| g.get_mut(shard as usize).and_then(Option::take));
        let Some(group) = group else { return Ok(()) };
        self.store.set_knows_cluster().await?;
        if let Err(e) = group.raft.shutdown().await {
            tracing::warn!(shard, error = %e, "raft group did not stop cleanly");
        }
        group.tasks.iter().for_each(JoinHandle::abort);
        drop(group);
        self.store.wipe_group(shard).await?;
        tracing::info!(shard, "replica closed and erased");
        Ok(())
    }

    /// Stops every group and waits until openraft has released the store, so that it can be reopened.
    /// Appends after this fail; entries that were waiting fail too (nothing was acknowledged).
    pub async fn shutdown(&self) {
        if let Some(task) = self.quieting.lock().ok().and_then(|mut q| q.take()) {
            task.abort();
        }
        let local = self.local();
        let shutdowns = local.iter().map(|(shard, g)| async move { (*shard, g.raft.shutdown().await) });
        for (shard, result) in futures::future::join_all(shutdowns).await {
            if let Err(e) = result {
                tracing::warn!(shard, error = %e, "raft group did not stop cleanly");
            }
        }
        for (_, g) in &local {
            g.tasks.iter().for_each(JoinHandle::abort);
        }
        drop(local);
        let waiter = self.alive.lock().ok().and_then(|mut a| a.take());
        if let Some((alive, mut rx)) = waiter {
            drop(alive);
            // recv() yields None once the last clone is gone; nothing is ever sent.
            if tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.is_err() {
                tracing::warn!("raft storage still in use 10 s after shutdown");
            }
        }
    }

    /// Serves one raft message from a peer (what [`RaftTransport::send`] carried) and returns the reply
    /// to carry back. Never fails: an unreadable message or a shard this node does not replicate gets
    /// an error reply, which the sender treats as an unreachable peer.
    pub fn handle_rpc(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let request = network::decode::<network::RaftRpc>(&payload);
        let replica =
            request.as_ref().ok().and_then(|r| self.group(r.shard)).map(|g| (g.raft.clone(), g.lease.clone()));
        Box::pin(async move { network::encode(&network::serve(replica, request).await) })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node's replica of group `shard` is quiet now: no heartbeats, no timers (`quiet.rs`).
    pub fn is_quiet(&self, shard: ShardId) -> bool {
        self.group(shard).is_some_and(|g| g.quiet.is_quiet())
    }

    /// Whether this node holds a replica of `shard`.
    pub fn is_replica(&self, shard: ShardId) -> bool {
        self.group(shard).is_some()
    }

    /// The shard's leader as this node knows it (its node name); `None` when unknown or not a replica.
    pub fn leader_of(&self, shard: ShardId) -> Option<String> {
        self.group(shard).and_then(|g| g.leadership.borrow().leader.clone())
    }

    /// The shard's group as this node sees it; `None` when this node holds no replica.
    pub fn group_status(&self, shard: ShardId) -> Option<GroupStatus> {
        let g = self.group(shard)?;
        let m = g.raft.metrics().borrow().clone();
        let leadership = leadership::leadership_of(node_id_of(&self.node), &m, &g.names);
        let last_applied = m.last_applied.map(|id| id.index).unwrap_or(0);
        let replicas = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| if n.addr.is_empty() { id.to_string() } else { n.addr.clone() })
            .collect();
        Some(GroupStatus {
            leader: leadership.leader,
            term: leadership.term,
            commit_index: g.observed.committed.load(Ordering::Relaxed).max(last_applied),
            last_applied,
            replicas,
            is_leader: leadership.is_leader,
        })
    }

    /// Follows the shard's leadership: the receiver sees every change (new term, new leader, this node
    /// deposed) as soon as openraft reports it. `None` when this node holds no replica.
    pub fn watch_leadership(&self, shard: ShardId) -> Option<watch::Receiver<Leadership>> {
        self.group(shard).map(|g| g.leadership.clone())
    }

    /// Returns once this node is confirmed the shard's leader by a quorum and its state machine has
    /// applied everything committed before the call, so that reads of the shard's state are
    /// linearizable; [`StoreError::NotLeader`] when it is not (or cannot confirm it). Concurrent checks
    /// share rounds.
    pub fn ensure_linearizable(&self, shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        let checked = match self.group(shard) {
            None => Err(StoreError::NotLeader { shard, leader: None }),
            Some(g) => g.check_leader(shard).and_then(|()| {
                let (tx, rx) = oneshot::channel();
                g.reads.send(tx).map(|()| rx).map_err(|_| StoreError::Closed)
            }),
        };
        Box::pin(async move { checked?.await.map_err(|_| StoreError::Closed)? })
    }

    /// Whether every shard group on this node knows a leader: the node's readiness. The metadata group
    /// is left out: shards serve without it (routing falls back to the placement computed from the seeds).
    pub fn all_have_leaders(&self) -> bool {
        self.local()
            .into_iter()
            .filter(|(id, _)| *id != self.shard_count)
            .all(|(_, g)| g.leadership.borrow().leader.is_some())
    }

    /// The shards this node replicates (not the metadata group).
    pub fn local_shards(&self) -> Vec<ShardId> {
        self.local().into_iter().map(|(shard, _)| shard).filter(|shard| *shard != self.shard_count).collect()
    }

    /// The groups this node holds a replica of, the metadata group included.
    pub fn local_groups(&self) -> Vec<ShardId> {
        self.local().into_iter().map(|(shard, _)| shard).collect()
    }

    /// The raft handle of this node's replica of group `shard`, for membership changes and leadership
    /// transfers (the placement driver's).
    pub fn raft(&self, shard: ShardId) -> Option<Raft<TypeConfig>> {
        self.group(shard).map(|g| g.raft.clone())
    }

    /// The metadata group's id: `shard_count`.
    pub fn meta_group(&self) -> ShardId {
        self.shard_count
    }

    fn group(&self, shard: ShardId) -> Option<Arc<Group>> {
        self.groups.read().ok()?.get(shard as usize).and_then(Clone::clone)
    }

    fn local(&self) -> Vec<(ShardId, Arc<Group>)> {
        let Ok(groups) = self.groups.read() else { return vec![] };
        groups.iter().enumerate().filter_map(|(shard, g)| g.clone().map(|g| (shard as ShardId, g))).collect()
    }
}

/// What a node that holds no replica of a shard knows of its leadership: nothing.
fn no_leadership() -> Leadership {
    Leadership { term: 0, is_leader: false, leader: None }
}

impl ShardLog for RaftLog {
    /// Proposes the entry if this node leads the shard; otherwise answers [`StoreError::NotLeader`] at
    /// once, with the leader's name when known, and proposes nothing.
    fn append(&self, shard: ShardId, entry: LogEntry) -> BoxFuture<'static, Result<LogIndex, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.group(shard) {
            None => Err(StoreError::NotLeader { shard, leader: None }),
            // A replica closing as the entry arrives proposes nothing: the leader is elsewhere.
            Some(g) => g.check_leader(shard).and_then(|()| {
                g.proposals.send(Proposal { entry, reply }).map_err(|_| StoreError::NotLeader { shard, leader: None })
            }),
        };
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn leadership(&self, shard: ShardId) -> Leadership {
        self.group(shard).map(|g| g.leadership.borrow().clone()).unwrap_or_else(no_leadership)
    }

    /// Served on the leader's lease when it holds (no message sent), else by a read-index round.
    fn read_barrier(&self, shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        if self.group(shard).is_some_and(|g| g.check_leader(shard).is_ok() && g.lease_holds(&self.node)) {
            metrics::READ_CHECKS.with_label_values(&["lease"]).inc();
            return Box::pin(std::future::ready(Ok(())));
        }
        metrics::READ_CHECKS.with_label_values(&["read_index"]).inc();
        self.ensure_linearizable(shard)
    }

    /// Free once this term's first entry is applied; before that, one read-index round, which waits for
    /// it.
    fn write_barrier(&self, shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        if self.group(shard).is_some_and(|g| g.check_leader(shard).is_ok() && g.applied_in_term(&self.node)) {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.ensure_linearizable(shard)
    }

    fn status(&self, shard: ShardId) -> Option<playground_proto::ShardStatus> {
        self.group_status(shard).map(|s| playground_proto::ShardStatus {
            shard,
            replicas: s.replicas,
            leader: s.leader,
            term: s.term,
            commit_index: s.commit_index,
        })
    }

    fn ready(&self) -> bool {
        self.all_have_leaders()
    }
}
