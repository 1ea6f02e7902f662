//! Elasticity: nodes join a running cluster, and the placement driver moves shard replicas and leaderships
//! so that every node carries its share.
//!
//! The cluster's metadata record (`crate::record`) says where each shard's replicas should be; each shard
//! group's raft membership says where they are. Every node runs a [`Driver`] task:
//! - **Join.** A node that is not a member of the record asks the metadata group's leader to admit it
//!   (`ReplicaOp::Join`); any member answers with the leader's name if it is not the leader.
//! - **Local replicas.** A node opens an empty replica of every shard the record places on it, so that the
//!   shard's leader can add it as a learner, and closes (erasing its data) a replica the record no longer
//!   places on it once it is no longer a voter of the group.
//! - **The driver proper** runs only where the metadata group's leader runs, so there is one. Each round:
//!   1. it reads every node's view of every shard; a shard whose replicas differ from the record's
//!      placement is *moving*: it opens the new replicas, asks the shard's leader to change the membership
//!      (add learners, wait for them to catch up, then one joint change: `RaftLog::change_replicas`) and
//!      tells the replicas left out to close;
//!   2. while fewer than `max_moves` shards are moving, it plans more moves (`crate::rebalance`) and writes
//!      them into the record, which is what the next rounds carry out, so a join never turns into a storm;
//!   3. once every shard sits where the record says, it evens out the leaders: the leader holds still
//!      until its followers' leases run out (`RaftLog::hand_over`), then the chosen replica stands for
//!      election (openraft 0.9 has no leader transfer of its own).
//!
//! The record is changed before the groups, and a group only ever changes by joint consensus, so a quorum
//! of the old and of the new replicas holds every acknowledged write at every step; a move cut short (a
//! leader lost, a node killed) is found unfinished by the next round and carried out again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use cluster_transport::PeerState;
use playground_proto::{ClusterMeta, ControlError, ReplicaAnswer, ReplicaOp, ShardId, ShardStatus};
use shardlog::{RaftLog, ShardLog, Store, META_REPLICATION};

use crate::client::{self, to_metadata_leader};
use crate::edits::{admit, plan_into, remove_drained, remove_members, start_draining};
use crate::handle::ControlHandle;
use crate::{rebalance, record};

/// How the driver paces itself.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// This node's cluster address, as others reach it (what a join records).
    pub addr: String,
    /// The replication factor the cluster aims for (capped by the number of members).
    pub replication_factor: usize,
    /// How many shards may be moving at once.
    pub max_moves: usize,
    /// Pause between rounds.
    pub interval: Duration,
    /// Bound on one membership change (catching a learner up included).
    pub move_timeout: Duration,
    /// A member down for longer is removed and its replicas re-created elsewhere.
    pub dead_member_timeout: Duration,
}

impl DriverSettings {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
    pub const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Pause between rounds while shards are moving.
const BUSY_INTERVAL: Duration = Duration::from_millis(50);

/// Bound on the small calls (open, close, campaign, join, status).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Driver {
    control: Arc<ControlHandle>,
    raft: Arc<RaftLog>,
    store: Arc<Store>,
    settings: DriverSettings,
    /// Changes of the record made on this node take turns, so that none is lost.
    writing: tokio::sync::Mutex<()>,
    /// Set once this node was drained: it does not ask to join again (until it restarts).
    leaving: AtomicBool,
    /// Set by a round that moved or planned something: the next round comes sooner.
    busy: AtomicBool,
    /// Whether this process has looked at the first record it knew for a drain of itself left over from
    /// before it started.
    checked_stale_drain: AtomicBool,
    /// Since when each member has been down, as this node's failure detector sees it (driver only).
    down_since: std::sync::Mutex<BTreeMap<String, Instant>>,
}

impl Driver {
    pub fn new(
        control: Arc<ControlHandle>,
        raft: Arc<RaftLog>,
        store: Arc<Store>,
        settings: DriverSettings,
    ) -> Arc<Self> {
        Arc::new(Driver {
            control,
            raft,
            store,
            settings,
            writing: tokio::sync::Mutex::new(()),
            leaving: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            checked_stale_drain: AtomicBool::new(false),
            down_since: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Serves one [`ReplicaOp`] from a peer (or from this node's own driver).
    pub async fn handle(&self, op: ReplicaOp) -> ReplicaAnswer {
        let unavailable = |e: &dyn std::fmt::Display| ControlError::Unavailable(e.to_string());
        match op {
            ReplicaOp::Join { id, addr } => {
                let _turn = self.writing.lock().await;
                let record = record::update(self.raft.as_ref(), &self.store, |m| admit(m, &id, &addr)).await?;
                self.control.cache.offer(record.clone());
                Ok(Some(record))
            }
            ReplicaOp::Open { shard } => {
                self.raft.open_replica(shard).await.map(|()| None).map_err(|e| unavailable(&e))
            }
            ReplicaOp::Change { shard, voters } => {
                self.raft.change_replicas(shard, &voters, self.settings.move_timeout).await?;
                Ok(None)
            }
            ReplicaOp::Close { shard } => {
                self.raft.close_replica(shard).await?;
                Ok(None)
            }
            ReplicaOp::Campaign { shard } => {
                self.raft.campaign(shard).await?;
                Ok(None)
            }
            ReplicaOp::HandOver { shard, to } => {
                self.raft.hand_over(shard, &to).await?;
                Ok(None)
            }
            ReplicaOp::Drain { id } => {
                let _turn = self.writing.lock().await;
                let rf = self.settings.replication_factor;
                let mut refused = None;
                let record = record::update(self.raft.as_ref(), &self.store, |m| match start_draining(m, &id, rf) {
                    Ok(changed) => changed,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .await?;
                if let Some(e) = refused {
                    return Err(e);
                }
                self.control.cache.offer(record.clone());
                Ok(Some(record))
            }
            ReplicaOp::Undrain { id } => {
                let _turn = self.writing.lock().await;
                let record = record::update(self.raft.as_ref(), &self.store, |m| {
                    let before = m.draining.len();
                    m.draining.retain(|d| *d != id);
                    m.draining.len() != before
                })
                .await?;
                self.control.cache.offer(record.clone());
                Ok(Some(record))
            }
        }
    }

    /// Runs rounds until aborted.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.round().await;
                // While shards move, the next round follows at once: its moves are already planned.
                let busy = self.busy.swap(false, Ordering::SeqCst);
                tokio::time::sleep(if busy { BUSY_INTERVAL } else { self.settings.interval }).await;
            }
        })
    }

    async fn round(&self) {
        let Some(record) = self.control.cache.meta() else { return };
        if !self.checked_stale_drain.swap(true, Ordering::SeqCst) && record.draining.contains(&self.control.me) {
            // A drain this node was in the middle of (or had finished) when it stopped: it was started
            // again, so it is wanted; a drain asked of it from now on goes ahead. Until the cancel went
            // through, the round does nothing else: seeing itself draining would make it leave.
            self.cancel_drain(&record).await;
            return;
        }
        if record.draining.contains(&self.control.me) {
            self.leaving.store(true, Ordering::SeqCst);
        }
        if !record.members.iter().any(|m| m.id == self.control.me) {
            if !self.leaving.load(Ordering::SeqCst) {
                // A node the cluster removed while it was away holds stale replicas: it comes back empty,
                // so it can never vote with them.
                for group in self.raft.local_groups() {
                    if let Err(e) = self.raft.close_replica(group).await {
                        tracing::warn!(group, error = %e, "cannot erase a stale replica");
                        return;
                    }
                }
                self.join(&record).await;
            }
            return;
        }
        self.keep_local_replicas(&record).await;
        if self.raft.leadership(self.store.meta_group()).is_leader {
            self.drive(&record).await;
        }
    }

    /// Asks the metadata group's leader to stop draining this node; if it cannot be reached, the next
    /// round asks again.
    async fn cancel_drain(&self, record: &ClusterMeta) {
        let op = ReplicaOp::Undrain { id: self.control.me.clone() };
        match to_metadata_leader(record, op, |node, op| async move { self.ask(&node, op, CALL_TIMEOUT).await }).await {
            Ok(Some(record)) => {
                tracing::info!("restarted after being drained: draining no more");
                self.control.cache.offer(record);
            }
            _ => self.checked_stale_drain.store(false, Ordering::SeqCst),
        }
    }

    /// Asks the metadata group's leader to admit this node.
    async fn join(&self, record: &ClusterMeta) {
        let op = ReplicaOp::Join { id: self.control.me.clone(), addr: self.settings.addr.clone() };
        if let Ok(Some(record)) =
            to_metadata_leader(record, op, |node, op| async move { self.ask(&node, op, CALL_TIMEOUT).await }).await
        {
            tracing::info!(version = record.version, "joined the cluster");
            self.control.cache.offer(record);
        }
    }

    /// Opens the replicas the record places here and closes those it no longer does.
    async fn keep_local_replicas(&self, record: &ClusterMeta) {
        let me = &self.control.me;
        for (shard, replicas) in record.placement.iter().enumerate() {
            let shard = shard as ShardId;
            let placed = replicas.contains(me);
            let held = self.raft.is_replica(shard);
            if placed && !held {
                if let Err(e) = self.raft.open_replica(shard).await {
                    tracing::warn!(shard, error = %e, "cannot open a replica");
                }
            } else if !placed && held && !self.raft.is_member(shard) {
                // Still a member means the move has not reached this node yet: the group may need it.
                if let Err(e) = self.raft.close_replica(shard).await {
                    tracing::warn!(shard, error = %e, "cannot close a replica");
                }
            }
        }
    }

    /// One round of the driver proper (on the metadata group's leader).
    async fn drive(&self, record: &ClusterMeta) {
        if self.remove_dead(record).await {
            return;
        }
        let actual = self.actual(record.shard_count).await;
        publish(record, &actual, self.settings.replication_factor);
        let moving: Vec<ShardId> = (0..record.shard_count)
            .filter(|&s| {
                let now: BTreeSet<&String> = actual[s as usize].iter().flat_map(|a| &a.replicas).collect();
                now != record.placement[s as usize].iter().collect()
            })
            .collect();
        crate::metrics::set_moves_in_progress(moving.len());
        let started = Instant::now();
        let attempted: Vec<ShardId> = moving.iter().take(self.settings.max_moves).copied().collect();
        let steps =
            attempted.iter().map(|&s| self.converge(s, &record.placement[s as usize], actual[s as usize].as_ref()));
        let results = futures::future::join_all(steps).await;
        let converged: BTreeSet<ShardId> =
            attempted.iter().zip(results).filter(|(_, ok)| *ok).map(|(shard, _)| *shard).collect();
        if !converged.is_empty() {
            crate::metrics::moves_done(converged.len(), started.elapsed());
        }
        self.busy.store(!moving.is_empty(), Ordering::SeqCst);
        // Shards that just got where they belong make room for the next moves at once, not a round later.
        let still: BTreeSet<ShardId> = moving.iter().filter(|s| !converged.contains(s)).copied().collect();
        let room = self.settings.max_moves.saturating_sub(still.len());
        let rf = self.settings.replication_factor;
        // Planned first on the record as this node knows it: a round with nothing to plan then touches
        // no log, so an idle metadata group stays quiet. A stale record only delays a plan by a round.
        if room > 0 && plan_into(&mut record.clone(), rf, room, &still) {
            let _turn = self.writing.lock().await;
            match record::update(self.raft.as_ref(), &self.store, |m| plan_into(m, rf, room, &still)).await {
                Ok(r) if r.version > record.version => {
                    self.control.cache.offer(r);
                    self.busy.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "placement not changed this round"),
            }
        }
        if moving.is_empty() {
            self.move_metadata_group(record).await;
            self.balance_leaders(record, &actual).await;
            if record.drain_in_progress() {
                self.forget_drained(&actual).await;
            }
        }
    }

    /// Removes the members that have been down for longer than `dead_member_timeout`, and their replicas
    /// from the placement (the next rounds re-create them elsewhere); whether the record changed.
    async fn remove_dead(&self, record: &ClusterMeta) -> bool {
        let Some(remote) = &self.control.remote else { return false };
        let peers = remote.peers();
        let now = Instant::now();
        let dead: Vec<String> = {
            let Ok(mut down) = self.down_since.lock() else { return false };
            down.retain(|id, _| record.members.iter().any(|m| m.id == *id));
            for m in record.members.iter().filter(|m| m.id != self.control.me) {
                if self.state_of(&m.id, &peers) != PeerState::Down {
                    down.remove(&m.id);
                } else {
                    down.entry(m.id.clone()).or_insert(now);
                }
            }
            let timeout = self.settings.dead_member_timeout;
            down.iter().filter(|(_, since)| now.duration_since(**since) >= timeout).map(|(id, _)| id.clone()).collect()
        };
        if dead.is_empty() {
            return false;
        }
        let _turn = self.writing.lock().await;
        match record::update(self.raft.as_ref(), &self.store, |m| remove_members(m, &dead)).await {
            Ok(r) if r.version > record.version => {
                tracing::warn!(?dead, "members down too long removed; their replicas will be re-created");
                self.control.cache.offer(r);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "dead members not removed this round");
                false
            }
        }
    }

    /// Moves the metadata group's replicas off members that may not host (leadership first, if here).
    async fn move_metadata_group(&self, record: &ClusterMeta) {
        let group = self.store.meta_group();
        let Some(status) = self.raft.group_status(group) else { return };
        let hosts = record.hosts();
        let want = META_REPLICATION.min(hosts.len());
        let placed = status.replicas.iter().filter(|r| hosts.contains(r)).count();
        if !status.is_leader || (placed == status.replicas.len() && placed >= want) {
            return;
        }
        let mut target: Vec<String> = status.replicas.iter().filter(|r| hosts.contains(r)).cloned().collect();
        for h in &hosts {
            if target.len() >= want {
                break;
            }
            if !target.contains(h) {
                target.push(h.clone());
            }
        }
        if !target.contains(&self.control.me) {
            if let Some(to) = target.iter().find(|t| status.replicas.contains(t)) {
                let _ = self.transfer(group, &self.control.me.clone(), to).await;
            }
            return;
        }
        for node in target.iter().filter(|n| !status.replicas.contains(n)) {
            if self.ask(node, ReplicaOp::Open { shard: group }, CALL_TIMEOUT).await.is_err() {
                return;
            }
        }
        if let Err(e) = self.raft.change_replicas(group, &target, self.settings.move_timeout).await {
            tracing::info!(error = %e, "metadata group move to be retried");
            return;
        }
        tracing::info!(replicas = ?target, "metadata group moved");
        for node in status.replicas.iter().filter(|n| !target.contains(n)) {
            let _ = self.ask(node, ReplicaOp::Close { shard: group }, CALL_TIMEOUT).await;
        }
    }

    /// Takes the draining members that hold nothing any more out of the record.
    async fn forget_drained(&self, actual: &[Option<ShardStatus>]) {
        let mut holding: BTreeSet<String> =
            actual.iter().flatten().flat_map(|a| a.replicas.iter().cloned().chain(a.leader.clone())).collect();
        if let Some(meta) = self.raft.group_status(self.store.meta_group()) {
            holding.extend(meta.replicas);
        }
        let _turn = self.writing.lock().await;
        match record::update(self.raft.as_ref(), &self.store, |m| remove_drained(m, &holding)).await {
            Ok(r) => {
                self.control.cache.offer(r);
            }
            Err(e) => tracing::debug!(error = %e, "drained members not removed this round"),
        }
    }

    /// Every shard as the node that knows the newest term of it sees it (shards without a known leader
    /// are left out: nothing can change them now).
    async fn actual(&self, shards: u32) -> Vec<Option<ShardStatus>> {
        let mut actual: Vec<Option<ShardStatus>> = vec![None; shards as usize];
        for status in client::cluster_status(&self.control, CALL_TIMEOUT).await {
            for s in status.shards {
                let Some(slot) = actual.get_mut(s.shard as usize) else { continue };
                let newer = slot.as_ref().is_none_or(|v| (s.term, s.commit_index) > (v.term, v.commit_index));
                if newer && s.leader.is_some() {
                    *slot = Some(s);
                }
            }
        }
        actual
    }

    /// Carries out one shard's move; returns whether the group now has the record's replicas.
    async fn converge(&self, shard: ShardId, target: &[String], actual: Option<&ShardStatus>) -> bool {
        let Some(actual) = actual else { return false };
        let Some(leader) = actual.leader.clone() else { return false };
        if !target.contains(&leader) {
            // A leader that removes itself drops what it was still proposing: hand over first, to a
            // replica that stays, and move the replicas next round.
            let peers = self.control.remote.as_ref().map(|r| r.peers()).unwrap_or_default();
            let up = |n: &String| self.state_of(n, &peers) == PeerState::Up;
            if let Some(to) = target.iter().find(|n| actual.replicas.contains(n) && up(n)) {
                self.transfer(shard, &leader, to).await.ok();
            }
            return false;
        }
        for node in target.iter().filter(|n| !actual.replicas.contains(n)) {
            if let Err(e) = self.ask(node, ReplicaOp::Open { shard }, CALL_TIMEOUT).await {
                tracing::debug!(shard, node, error = %e, "replica not opened yet");
                return false;
            }
        }
        let change = ReplicaOp::Change { shard, voters: target.to_vec() };
        if let Err(e) = self.ask(&leader, change, self.settings.move_timeout + CALL_TIMEOUT).await {
            tracing::info!(shard, leader, error = %e, "membership change to be retried");
            return false;
        }
        tracing::info!(shard, replicas = ?target, "shard moved");
        for node in actual.replicas.iter().filter(|n| !target.contains(n)) {
            // Best effort: a node that misses this closes its replica itself once it sees the record.
            let _ = self.ask(node, ReplicaOp::Close { shard }, CALL_TIMEOUT).await;
        }
        true
    }

    /// Asks replicas to stand for election until every member leads about as many shards as any other.
    /// Leaderships go only to members the failure detector holds up: a leader handing over to a node
    /// that cannot take over refuses work until the hand-over lapses, and would do so again every round.
    /// A member held down counts as no host, so its leaderships are spread over the others; one merely
    /// suspected keeps those it has.
    async fn balance_leaders(&self, record: &ClusterMeta, actual: &[Option<ShardStatus>]) {
        let leaders: Vec<Option<String>> = actual.iter().map(|a| a.as_ref().and_then(|a| a.leader.clone())).collect();
        let peers = self.control.remote.as_ref().map(|r| r.peers()).unwrap_or_default();
        let leading: BTreeSet<&str> = leaders.iter().flatten().map(String::as_str).collect();
        let hosts: Vec<String> = record
            .hosts()
            .into_iter()
            .filter(|id| match self.state_of(id, &peers) {
                PeerState::Up => true,
                PeerState::Suspect => leading.contains(id.as_str()),
                PeerState::Down => false,
            })
            .collect();
        let mut transfers = rebalance::plan_leaders(&record.placement, &leaders, &hosts);
        transfers.retain(|(_, to)| self.state_of(to, &peers) == PeerState::Up);
        if !transfers.is_empty() {
            self.busy.store(true, Ordering::SeqCst);
        }
        let asks = transfers.into_iter().take(self.settings.max_moves).map(|(shard, to)| {
            let from = leaders[shard as usize].clone().unwrap_or_default();
            async move { (shard, self.transfer(shard, &from, &to).await) }
        });
        for (shard, result) in futures::future::join_all(asks).await {
            if let Err(e) = result {
                tracing::debug!(shard, error = %e, "leadership transfer to be retried");
            }
        }
    }

    /// How this node's failure detector holds member `id`: itself is up, a member it has no session
    /// with is down.
    fn state_of(&self, id: &str, peers: &[cluster_transport::Peer]) -> PeerState {
        if id == self.control.me {
            return PeerState::Up;
        }
        peers.iter().find(|p| p.id == id).map_or(PeerState::Down, |p| p.state)
    }

    /// Moves the leadership of `shard` from `from` to `to`: `from` hands over, `to` stands for election.
    async fn transfer(&self, shard: ShardId, from: &str, to: &str) -> ReplicaAnswer {
        self.ask(from, ReplicaOp::HandOver { shard, to: to.to_owned() }, CALL_TIMEOUT).await?;
        self.ask(to, ReplicaOp::Campaign { shard }, CALL_TIMEOUT).await
    }

    /// Sends `op` to `node` (or serves it here) and reads its answer.
    async fn ask(&self, node: &str, op: ReplicaOp, timeout: Duration) -> ReplicaAnswer {
        if node == self.control.me {
            return tokio::time::timeout(timeout, self.handle(op)).await.unwrap_or(Err(ControlError::Timeout));
        }
        let remote = self.control.remote.as_ref().ok_or_else(|| ControlError::Unavailable("no transport".into()))?;
        client::replicas(remote.as_ref(), node, op, timeout).await
    }
}

/// Replicas and leaders per node, and the shards short of replicas, for the metrics.
fn publish(record: &ClusterMeta, actual: &[Option<ShardStatus>], replication_factor: usize) {
    let replicas = rebalance::replica_counts(&record.placement);
    let leaders: Vec<Option<String>> = actual.iter().map(|a| a.as_ref().and_then(|a| a.leader.clone())).collect();
    let leaders = rebalance::leader_counts(&leaders);
    for m in &record.members {
        let count = |by: &BTreeMap<String, usize>| by.get(&m.id).copied().unwrap_or(0) as i64;
        crate::metrics::REPLICAS_PER_NODE.with_label_values(&[&m.id]).set(count(&replicas));
        crate::metrics::LEADERS_PER_NODE.with_label_values(&[&m.id]).set(count(&leaders));
    }
    let rf = replication_factor.min(record.members.len());
    let short = actual.iter().filter(|a| a.as_ref().is_none_or(|a| a.replicas.len() < rf)).count();
    crate::metrics::UNDER_REPLICATED.set(short as i64);
}
