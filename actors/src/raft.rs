//! Each shard's log as an openraft group replicated across nodes: [`RaftLog`] implements [`ShardLog`] so
//! that entities cannot tell it from [`LocalLog`](crate::store::LocalLog), except that only the shard's
//! leader accepts appends (others answer [`StoreError::NotLeader`]).
//!
//! - `placement`: node ids (a hash of node names) and which nodes replicate which shard, computed alike
//!   on every node. A node runs a group only for the shards it replicates.
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
//! - `metrics`: `playground_raft_*`.
//!
//! Besides the shard groups, every cluster has one metadata group (`crate::meta`), id `shard_count`, on
//! [`META_REPLICATION`] nodes: the same machinery (log store, state machine, proposer) over the store's
//! `meta` tree. It has no shard actor and no entities; `crate::meta` reads and writes its one record.

mod leadership;
mod log_store;
mod metrics;
mod network;
mod placement;
mod proposer;
mod reads;
mod settings;
mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::InitializeError;
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::ids::ShardId;
use crate::store::{Leadership, LogEntry, LogIndex, ShardLog, Store};

use log_store::LogStore;
use network::Network;
use proposer::Proposal;
use reads::ReadWaiter;
use state_machine::StateMachine;

pub use network::{NoTransport, RaftTransport};
pub use placement::{node_id_of, placement};
pub use settings::RaftSettings;

/// Replicas of the metadata group (fewer when the cluster has fewer members), whatever the shards'
/// replication factor: it must survive what the shards survive, and three is enough for that.
pub const META_REPLICATION: usize = 3;

/// A member of a shard group: [`node_id_of`] its name. Node ids are per cluster, not per shard: the
/// same node id takes part in many groups.
pub type NodeId = u64;

/// What one raft entry of a shard carries: the log entries the proposer packed, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Packed {
    pub entries: Vec<LogEntry>,
}

/// The state machine's answer to one raft entry: the shard log index of its first packed entry; the
/// others follow one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub first: LogIndex,
}

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

struct Group {
    raft: Raft<TypeConfig>,
    /// Node ids of the replicas placement gave the group, to name a leader before membership is known.
    names: BTreeMap<NodeId, String>,
    proposals: mpsc::UnboundedSender<Proposal>,
    reads: mpsc::UnboundedSender<ReadWaiter>,
    leadership: watch::Receiver<Leadership>,
    observed: Arc<leadership::Observed>,
    tasks: Vec<JoinHandle<()>>,
}

/// The [`ShardLog`] whose shards are openraft groups.
pub struct RaftLog {
    node: String,
    /// Indexed by group id: the shards, then the metadata group (id `shard_count`); `None` for the groups
    /// this node does not replicate.
    groups: Vec<Option<Group>>,
    shard_count: u32,
    alive: Mutex<Option<(Alive, mpsc::Receiver<()>)>>,
}

impl RaftLog {
    /// Starts a group for every shard this node replicates, and the metadata group when this node is one
    /// of its [`META_REPLICATION`] replicas, all at once, and returns when each has
    /// started; it does not wait for elections (peers may not be up yet: see [`RaftLog::all_have_leaders`]),
    /// except that a group whose only replica is this node elects itself first. A group that has never
    /// run is initialized with its whole replica set by its first replica; the others wait to be
    /// contacted. A group that has run resumes from its log, vote and state machine.
    pub async fn start(store: Arc<Store>, settings: RaftSettings) -> Result<Arc<RaftLog>, RaftStartError> {
        let mut members = settings.members.clone();
        members.sort();
        members.dedup();
        if !members.contains(&settings.node) {
            return Err(RaftStartError::Config(format!(
                "this node, {}, is not among the cluster's members {members:?}",
                settings.node
            )));
        }
        let ids: std::collections::BTreeSet<NodeId> = members.iter().map(|m| node_id_of(m)).collect();
        if ids.len() != members.len() {
            return Err(RaftStartError::Config(format!("two of the members {members:?} hash to one node id")));
        }
        let (tx, rx) = mpsc::channel(1);
        let alive = Alive { _held: tx };
        let shard_count = store.shard_count();
        // The metadata group is placed like one more shard, by the same rule, so every node agrees on
        // its replicas without having to read anything first.
        let starts = (0..=shard_count).map(|shard| {
            let rf = if shard == shard_count { META_REPLICATION } else { settings.replication_factor };
            let replicas = placement(shard, &members, rf);
            let (store, settings, alive) = (store.clone(), &settings, alive.clone());
            async move {
                if replicas.contains(&settings.node) {
                    start_group(store, shard, replicas, settings, alive).await.map(Some)
                } else {
                    Ok(None)
                }
            }
        });
        let groups = futures::future::try_join_all(starts).await?;
        Ok(Arc::new(RaftLog { node: settings.node, groups, shard_count, alive: Mutex::new(Some((alive, rx))) }))
    }

    /// Stops every group and waits until openraft has released the store, so that it can be reopened.
    /// Appends after this fail; entries that were waiting fail too (nothing was acknowledged).
    pub async fn shutdown(&self) {
        let shutdowns = self.local().map(|(shard, g)| async move { (shard, g.raft.shutdown().await) });
        for (shard, result) in futures::future::join_all(shutdowns).await {
            if let Err(e) = result {
                tracing::warn!(shard, error = %e, "raft group did not stop cleanly");
            }
        }
        for (_, g) in self.local() {
            g.tasks.iter().for_each(JoinHandle::abort);
        }
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
        let raft = request.as_ref().ok().and_then(|r| self.group(r.shard)).map(|g| g.raft.clone());
        Box::pin(async move { network::encode(&network::serve(raft, request).await) })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
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
        self.local().filter(|(id, _)| *id != self.shard_count).all(|(_, g)| g.leadership.borrow().leader.is_some())
    }

    /// The shards this node replicates (not the metadata group).
    pub fn local_shards(&self) -> Vec<ShardId> {
        self.local().map(|(shard, _)| shard).filter(|shard| *shard != self.shard_count).collect()
    }

    /// The metadata group's id: `shard_count`.
    pub fn meta_group(&self) -> ShardId {
        self.shard_count
    }

    fn group(&self, shard: ShardId) -> Option<&Group> {
        self.groups.get(shard as usize).and_then(Option::as_ref)
    }

    fn local(&self) -> impl Iterator<Item = (ShardId, &Group)> {
        self.groups.iter().enumerate().filter_map(|(shard, g)| g.as_ref().map(|g| (shard as ShardId, g)))
    }
}

impl Drop for Group {
    /// A group dropped without a shutdown (a start that failed half-way) leaves no task behind.
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Group {
    /// Whether this node may propose or serve reads: it leads, and a quorum has acknowledged it
    /// lately. A leader cut off from its peers stops taking work within about a second, rather than
    /// queueing it behind proposals that cannot commit.
    fn check_leader(&self, shard: ShardId) -> Result<(), StoreError> {
        let l = self.leadership.borrow();
        if !l.is_leader {
            Err(StoreError::NotLeader { shard, leader: l.leader.clone() })
        } else if self.observed.stale.load(Ordering::Relaxed) {
            Err(StoreError::NotLeader { shard, leader: None })
        } else {
            Ok(())
        }
    }
}

async fn start_group(
    store: Arc<Store>,
    shard: ShardId,
    replicas: Vec<String>,
    settings: &RaftSettings,
    alive: Alive,
) -> Result<Group, RaftStartError> {
    let raft_err = |e: &dyn std::fmt::Display| RaftStartError::Raft { shard, reason: e.to_string() };
    let me = node_id_of(&settings.node);
    let log_tree =
        store.open_tree(format!("raft-log-{shard}")).await.map_err(|source| RaftStartError::Store { shard, source })?;
    let log_store = LogStore::new(store.clone(), log_tree.clone(), alive.clone());
    let state_machine = StateMachine::new(store.clone(), shard, log_tree, alive);
    let network = Network { shard, me, transport: settings.transport.clone(), rpc_timeout: settings.rpc_timeout };
    let raft = Raft::new(me, settings::raft_config(shard, settings)?, network, log_store, state_machine)
        .await
        .map_err(|e| raft_err(&e))?;
    let names: BTreeMap<NodeId, String> = replicas.iter().map(|r| (node_id_of(r), r.clone())).collect();
    if !raft.is_initialized().await.map_err(|e| raft_err(&e))? {
        // Entries applied without raft (the local log) exist on this node only: replicating on top of them
        // would leave the replicas disagreeing.
        if replicas.len() > 1 && shard < store.shard_count() && store.applied_index(shard).unwrap_or(0) > 0 {
            let _ = raft.shutdown().await;
            return Err(RaftStartError::Config(format!(
                "shard {shard}: the data directory holds data written by a one-node cluster; a replicated cluster \
                 starts on a fresh data directory"
            )));
        }
        if replicas.first() == Some(&settings.node) {
            let members: BTreeMap<NodeId, BasicNode> =
                names.iter().map(|(id, name)| (*id, BasicNode::new(name))).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::debug!(shard, ?replicas, "shard group initialized"),
                // A peer reached this replica first: the group exists already.
                Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(shard, reason = %e, "shard group already initialized by its peers");
                }
                Err(e) => return Err(raft_err(&e)),
            }
        }
    } else {
        let on_disk: Vec<NodeId> =
            raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        let mut placed: Vec<NodeId> = names.keys().copied().collect();
        let mut stored = on_disk.clone();
        placed.sort_unstable();
        stored.sort_unstable();
        if on_disk.contains(&me) && stored != placed {
            let _ = raft.shutdown().await;
            return Err(RaftStartError::Config(format!(
                "shard {shard}: the group on disk has members {on_disk:?} but the configuration places it on \
                 {replicas:?}: the data directory was made by a cluster with other members"
            )));
        }
        if !on_disk.contains(&me) {
            let _ = raft.shutdown().await;
            return Err(RaftStartError::Config(format!(
                "shard {shard}: the group on disk has members {on_disk:?}, not this node {} (id {me}): the data \
                 directory belongs to another node",
                settings.node
            )));
        }
    }
    if replicas == [settings.node.clone()] {
        raft.wait(Some(settings.ready_timeout))
            .current_leader(me, format!("shard {shard} ready"))
            .await
            .map_err(|_| RaftStartError::NoLeader { shard, waited: settings.ready_timeout })?;
    }
    metrics::init_shard(&shard.to_string());
    let initial = leadership::leadership_of(me, &raft.metrics().borrow(), &names);
    if initial.leader.is_some() {
        metrics::LEADER_CHANGES.with_label_values(&[&shard.to_string()]).inc();
    }
    let (leadership_tx, leadership) = watch::channel(initial);
    let observed = Arc::new(leadership::Observed::default());
    let (proposals, proposals_rx) = mpsc::unbounded_channel();
    let (reads, reads_rx) = mpsc::unbounded_channel();
    let read_timeout = settings.rpc_timeout.max(Duration::from_millis(500));
    let tasks = vec![
        tokio::spawn(proposer::run(shard, raft.clone(), proposals_rx)),
        tokio::spawn(reads::run(shard, raft.clone(), read_timeout, reads_rx)),
        tokio::spawn(leadership::follow(shard, me, names.clone(), raft.clone(), leadership_tx, observed.clone())),
    ];
    Ok(Group { raft, names, proposals, reads, leadership, observed, tasks })
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
            Some(g) => g
                .check_leader(shard)
                .and_then(|()| g.proposals.send(Proposal { entry, reply }).map_err(|_| StoreError::Closed)),
        };
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn leadership(&self, shard: ShardId) -> Leadership {
        self.group(shard).map(|g| g.leadership.borrow().clone()).unwrap_or_else(no_leadership)
    }

    fn read_barrier(&self, shard: ShardId) -> BoxFuture<'static, Result<(), StoreError>> {
        self.ensure_linearizable(shard)
    }

    fn status(&self, shard: ShardId) -> Option<crate::protocol::ShardStatus> {
        self.group_status(shard).map(|s| crate::protocol::ShardStatus {
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
