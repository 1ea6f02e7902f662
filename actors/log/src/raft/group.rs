//! One shard group on this node: its openraft handle and the tasks and state around it (proposer, read
//! checks, leadership, lease, quiet state), how it starts, and the check every leader-side call makes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::InitializeError;
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use playground_proto::{node_id_of, NodeId, ShardId};

use crate::error::StoreError;
use crate::store::{Leadership, Store};

use super::lease::{self, Lease};
use super::log_store::LogStore;
use super::network::Network;
use super::proposer::{self, Proposal};
use super::reads::{self, ReadWaiter};
use super::state_machine::StateMachine;
use super::{leadership, metrics, quiet, settings, Alive, RaftSettings, RaftStartError, TypeConfig};

pub(super) struct Group {
    pub(super) raft: Raft<TypeConfig>,
    /// Node ids of the replicas placement gave the group, to name a leader before membership is known.
    pub(super) names: BTreeMap<NodeId, String>,
    pub(super) proposals: mpsc::UnboundedSender<Proposal>,
    pub(super) reads: mpsc::UnboundedSender<ReadWaiter>,
    pub(super) leadership: watch::Receiver<Leadership>,
    pub(super) observed: Arc<leadership::Observed>,
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// While handing leadership over: until when, and to whom. The leader takes no new work meanwhile.
    pub(super) handing_over: Mutex<Option<(std::time::Instant, String)>>,
    pub(super) lease: Arc<Lease>,
    /// openraft's metrics, kept here because `Raft::metrics` hands out a new receiver per call.
    pub(super) metrics: watch::Receiver<lease::Metrics>,
    pub(super) quiet: Arc<quiet::Quiet>,
}

/// How a group starts on this node.
pub(super) enum Start {
    /// A group of the cluster's first placement: its first replica initializes it with every replica.
    Bootstrap(Vec<String>),
    /// A group this node held before it stopped; it resumes from its log, vote and state machine.
    Resume,
    /// A new, empty replica (a learner to be): it waits for the leader to send it the log or a snapshot.
    Join,
}

impl Drop for Group {
    /// A group dropped without a shutdown (a start that failed half-way) leaves no task behind.
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Group {
    /// Whether this node leads and has applied its term's first entry ([`lease::applied_in_term`]).
    pub(super) fn applied_in_term(&self, node: &str) -> bool {
        lease::applied_in_term(&self.metrics.borrow(), node_id_of(node))
    }

    /// Whether this node may serve a read without a quorum round ([`Lease::holds_for`]).
    pub(super) fn lease_holds(&self, node: &str) -> bool {
        self.lease.holds_for(&self.metrics.borrow(), node_id_of(node))
    }

    /// Whether this node may propose or serve reads: it leads, and a quorum has acknowledged it
    /// lately. A leader cut off from its peers stops taking work within about a second, rather than
    /// queueing it behind proposals that cannot commit. Every leader-side call asks this first, so a
    /// yes also marks the group in use (`quiet.rs`).
    pub(super) fn check_leader(&self, shard: ShardId) -> Result<(), StoreError> {
        let checked = self.may_lead(shard);
        if checked.is_ok() {
            self.quiet.touch();
        }
        checked
    }

    fn may_lead(&self, shard: ShardId) -> Result<(), StoreError> {
        let handing = self.handing_over.lock().ok().and_then(|h| h.clone());
        if let Some((_, to)) = handing.filter(|(until, _)| std::time::Instant::now() < *until) {
            return Err(StoreError::NotLeader { shard, leader: Some(to) });
        }
        let l = self.leadership.borrow();
        if !l.is_leader {
            Err(StoreError::NotLeader { shard, leader: l.leader.clone() })
        } else if self.observed.stale.load(Ordering::Relaxed) && self.quiet.ticking_for(leadership::STALE_LEADER) {
            // A quiet leader hears from nobody; it is stale only once it has been awake that long.
            Err(StoreError::NotLeader { shard, leader: None })
        } else {
            Ok(())
        }
    }
}

pub(super) async fn start_group(
    store: Arc<Store>,
    shard: ShardId,
    start: Start,
    settings: &RaftSettings,
    alive: Alive,
) -> Result<Option<Group>, RaftStartError> {
    let raft_err = |e: &dyn std::fmt::Display| RaftStartError::Raft { shard, reason: e.to_string() };
    let me = node_id_of(&settings.node);
    let log_tree = store
        .open_tree(crate::store::group_log_tree(shard))
        .await
        .map_err(|source| RaftStartError::Store { shard, source })?;
    let log_store = LogStore::new(store.clone(), log_tree.clone(), alive.clone());
    let state_machine = StateMachine::new(store.clone(), shard, log_tree, alive);
    let lease = Arc::new(Lease::new());
    let network = Network {
        shard,
        me,
        transport: settings.transport.clone(),
        rpc_timeout: settings.rpc_timeout,
        lease: lease.clone(),
    };
    let raft = Raft::new(me, settings::raft_config(shard, settings)?, network, log_store, state_machine)
        .await
        .map_err(|e| raft_err(&e))?;
    let replicas = match &start {
        Start::Bootstrap(replicas) => replicas.clone(),
        Start::Resume | Start::Join => vec![],
    };
    let names: BTreeMap<NodeId, String> = replicas.iter().map(|r| (node_id_of(r), r.clone())).collect();
    let initialized = raft.is_initialized().await.map_err(|e| raft_err(&e))?;
    match start {
        Start::Bootstrap(_) if !initialized => {
            // Entries applied without raft (the local log) exist on this node only: replicating on top of
            // them would leave the replicas disagreeing.
            if replicas.len() > 1 && shard < store.shard_count() && store.applied_index(shard).unwrap_or(0) > 0 {
                let _ = raft.shutdown().await;
                return Err(RaftStartError::Config(format!(
                    "shard {shard}: the data directory holds data written by a one-node cluster; a replicated \
                     cluster starts on a fresh data directory"
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
        }
        Start::Resume if initialized => {
            let on_disk: Vec<NodeId> =
                raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
            if !on_disk.contains(&me) {
                // Removed from the group while this node was down: what it holds is stale, and the group
                // goes on without it.
                let _ = raft.shutdown().await;
                drop(raft);
                store.wipe_group(shard).await.map_err(|source| RaftStartError::Store { shard, source })?;
                tracing::info!(shard, "replica removed while this node was down; erased");
                return Ok(None);
            }
        }
        // A replica that had not been initialized yet waits to be contacted, like a new one.
        _ => {}
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
    let quiet = Arc::new(quiet::Quiet::new(quiet_groups(settings)));
    let follow =
        leadership::follow(shard, me, names.clone(), raft.clone(), leadership_tx, observed.clone(), quiet.clone());
    let tasks = vec![
        tokio::spawn(proposer::run(shard, raft.clone(), proposals_rx)),
        tokio::spawn(reads::run(shard, raft.clone(), read_timeout, reads_rx)),
        tokio::spawn(follow),
    ];
    let handing_over = Mutex::new(None);
    let metrics = raft.metrics();
    Ok(Some(Group { raft, names, proposals, reads, leadership, observed, tasks, handing_over, lease, metrics, quiet }))
}

/// Whether the groups of a node with these settings go quiet when idle: asked for, and the transport
/// has a failure detector to stand in for their heartbeats.
pub(super) fn quiet_groups(settings: &RaftSettings) -> bool {
    settings.quiet_groups && settings.transport.reachability(&settings.node).is_some()
}
