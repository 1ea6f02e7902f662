//! Elasticity: nodes join a running cluster, and the placement driver moves shard replicas and leaderships
//! so that every node carries its share.
//!
//! The cluster's metadata record (`crate::meta`) says where each shard's replicas should be; each shard
//! group's raft membership says where they are. Every node runs a [`Driver`] task:
//! - **Join.** A node that is not a member of the record asks the metadata group's leader to admit it
//!   ([`ReplicaOp::Join`]); any member answers with the leader's name if it is not the leader.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::cluster::Router;
use crate::codec;
use crate::error::ApiError;
use crate::ids::ShardId;
use crate::meta::{self, ClusterMeta, MemberRecord};
use crate::protocol::{Request, ShardStatus};
use crate::raft::RaftLog;
use crate::rebalance;
use crate::store::{ShardLog, Store};

/// What one node asks another to do about membership and placement ([`Request::Replicas`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaOp {
    /// Admit node `id`, reachable at cluster address `addr`, as a member (the metadata group's leader).
    Join { id: String, addr: String },
    /// Open an empty replica of `shard` here, for its leader to add as a learner.
    Open { shard: ShardId },
    /// On the shard's leader: make `voters` the shard's replicas.
    Change { shard: ShardId, voters: Vec<String> },
    /// Close and erase this node's replica of `shard`: the group went on without it.
    Close { shard: ShardId },
    /// Stand for election in `shard`: leadership moves here.
    Campaign { shard: ShardId },
    /// On the shard's leader: get ready to hand leadership to `to` (`RaftLog::hand_over`).
    HandOver { shard: ShardId, to: String },
}

/// The answer to [`ReplicaOp`]: the cluster's record after a `Join`, nothing otherwise.
pub type ReplicaAnswer = Result<Option<ClusterMeta>, ApiError>;

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
}

impl DriverSettings {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
    pub const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Bound on the small calls (open, close, campaign, join, status).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Driver {
    router: Arc<Router>,
    raft: Arc<RaftLog>,
    store: Arc<Store>,
    settings: DriverSettings,
    /// Changes of the record made on this node take turns, so that none is lost.
    writing: tokio::sync::Mutex<()>,
}

impl Driver {
    pub fn new(router: Arc<Router>, raft: Arc<RaftLog>, store: Arc<Store>, settings: DriverSettings) -> Arc<Self> {
        Arc::new(Driver { router, raft, store, settings, writing: tokio::sync::Mutex::new(()) })
    }

    /// Serves one [`ReplicaOp`] from a peer (or from this node's own driver).
    pub async fn handle(&self, op: ReplicaOp) -> ReplicaAnswer {
        let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(e.to_string());
        match op {
            ReplicaOp::Join { id, addr } => {
                let _turn = self.writing.lock().await;
                let record = meta::update(self.raft.as_ref(), &self.store, |m| admit(m, &id, &addr)).await?;
                self.router.offer_meta(record.clone());
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
        }
    }

    /// Runs rounds until aborted.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.round().await;
                tokio::time::sleep(self.settings.interval).await;
            }
        })
    }

    async fn round(&self) {
        let Some(record) = self.router.meta() else { return };
        if !record.members.iter().any(|m| m.id == self.router.me) {
            self.join(&record).await;
            return;
        }
        self.keep_local_replicas(&record).await;
        if self.raft.leadership(self.store.meta_group()).is_leader {
            self.drive(&record).await;
        }
    }

    /// Asks the members, the metadata group's leader first once known, to admit this node.
    async fn join(&self, record: &ClusterMeta) {
        let op = ReplicaOp::Join { id: self.router.me.clone(), addr: self.settings.addr.clone() };
        let mut candidates: Vec<String> = record.members.iter().map(|m| m.id.clone()).collect();
        let mut asked = BTreeSet::new();
        while let Some(node) = candidates.pop() {
            if !asked.insert(node.clone()) {
                continue;
            }
            match self.ask(&node, op.clone(), CALL_TIMEOUT).await {
                Ok(Some(record)) => {
                    tracing::info!(version = record.version, "joined the cluster");
                    self.router.offer_meta(record);
                    return;
                }
                Err(ApiError::NotLeader { leader: Some(leader), .. }) => candidates.push(leader),
                Ok(None) | Err(_) => {}
            }
        }
    }

    /// Opens the replicas the record places here and closes those it no longer does.
    async fn keep_local_replicas(&self, record: &ClusterMeta) {
        let me = &self.router.me;
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
        let steps = moving
            .iter()
            .take(self.settings.max_moves)
            .map(|&s| self.converge(s, &record.placement[s as usize], actual[s as usize].as_ref()));
        let done = futures::future::join_all(steps).await.into_iter().filter(|ok| *ok).count();
        if done > 0 {
            crate::metrics::moves_done(done, started.elapsed());
        }
        if moving.len() < self.settings.max_moves {
            let room = self.settings.max_moves - moving.len();
            let rf = self.settings.replication_factor;
            let _turn = self.writing.lock().await;
            let busy: BTreeSet<ShardId> = moving.iter().copied().collect();
            match meta::update(self.raft.as_ref(), &self.store, |m| plan_into(m, rf, room, &busy)).await {
                Ok(r) if r.version > record.version => {
                    self.router.offer_meta(r);
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "placement not changed this round"),
            }
        }
        if moving.is_empty() {
            self.balance_leaders(record, &actual).await;
        }
    }

    /// Every shard as the node that knows the newest term of it sees it (shards without a known leader
    /// are left out: nothing can change them now).
    async fn actual(&self, shards: u32) -> Vec<Option<ShardStatus>> {
        let mut actual: Vec<Option<ShardStatus>> = vec![None; shards as usize];
        for status in self.router.cluster_status(CALL_TIMEOUT).await {
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
            if let Some(to) = target.iter().find(|n| actual.replicas.contains(n)) {
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
    async fn balance_leaders(&self, record: &ClusterMeta, actual: &[Option<ShardStatus>]) {
        let leaders: Vec<Option<String>> = actual.iter().map(|a| a.as_ref().and_then(|a| a.leader.clone())).collect();
        let hosts: Vec<String> = record.members.iter().map(|m| m.id.clone()).collect();
        let transfers = rebalance::plan_leaders(&record.placement, &leaders, &hosts);
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

    /// Moves the leadership of `shard` from `from` to `to`: `from` hands over, `to` stands for election.
    async fn transfer(&self, shard: ShardId, from: &str, to: &str) -> ReplicaAnswer {
        self.ask(from, ReplicaOp::HandOver { shard, to: to.to_owned() }, CALL_TIMEOUT).await?;
        self.ask(to, ReplicaOp::Campaign { shard }, CALL_TIMEOUT).await
    }

    /// Sends `op` to `node` (or serves it here) and reads its answer.
    async fn ask(&self, node: &str, op: ReplicaOp, timeout: Duration) -> ReplicaAnswer {
        if node == self.router.me {
            return tokio::time::timeout(timeout, self.handle(op)).await.unwrap_or(Err(ApiError::Timeout));
        }
        let remote = self.router.remote.as_ref().ok_or_else(|| ApiError::Unavailable("no transport".into()))?;
        let bytes = remote
            .call(node, codec::encode(&Request::Replicas(op)), timeout)
            .await
            .map_err(|e| ApiError::Unavailable(format!("{node}: {e:?}")))?;
        codec::decode::<ReplicaAnswer>(b"replicas", &bytes).map_err(|e| ApiError::Unavailable(e.to_string()))?
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

/// Adds member `id` at `addr` to the record (or updates its address); whether anything changed.
fn admit(record: &mut ClusterMeta, id: &str, addr: &str) -> bool {
    match record.members.iter_mut().find(|m| m.id == id) {
        Some(m) if m.addr == addr => false,
        Some(m) => {
            m.addr = addr.to_owned();
            true
        }
        None => {
            record.members.push(MemberRecord { id: id.to_owned(), addr: addr.to_owned() });
            record.members.sort_by(|a, b| a.id.cmp(&b.id));
            true
        }
    }
}

/// Writes up to `room` planned moves into the record's placement, none for a shard in `busy` (still
/// moving: its learners are being caught up); whether it changed the record.
fn plan_into(record: &mut ClusterMeta, replication_factor: usize, room: usize, busy: &BTreeSet<ShardId>) -> bool {
    let hosts: Vec<String> = record.members.iter().map(|m| m.id.clone()).collect();
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
