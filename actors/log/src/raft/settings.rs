//! How this node takes part in the shard groups, and the openraft configuration of each group.

use std::sync::Arc;
use std::time::Duration;

use playground_proto::ShardId;

use super::{NoTransport, RaftStartError, RaftTransport};

/// How this node takes part in the shard groups.
#[derive(Clone)]
pub struct RaftSettings {
    /// This node's name; its id in every group is [`node_id_of`](super::node_id_of) of it.
    pub node: String,
    /// The cluster's members at bootstrap, this node included; placement is computed from them.
    pub members: Vec<String>,
    /// Replicas per shard; the effective factor is at most the number of members.
    pub replication_factor: usize,
    /// How raft messages reach the other nodes.
    pub transport: Arc<dyn RaftTransport>,
    /// Bound on an AppendEntries or Vote round trip (openraft bounds them tighter still: heartbeats
    /// by the heartbeat interval, votes by the minimum election timeout).
    pub rpc_timeout: Duration,
    /// Bound on sending one snapshot chunk.
    pub snapshot_timeout: Duration,
    /// A snapshot is built after this many raft entries; the log is then purged up to a fifth of that
    /// behind it, so a replica that missed more catches up by snapshot.
    pub snapshot_logs: u64,
    /// How long a group whose only replica is this node has to elect itself at start.
    pub ready_timeout: Duration,
    /// Whether idle groups go quiet (no heartbeats, no timers) while the transport's failure detector
    /// watches their leaders (`quiet.rs`).
    pub quiet_groups: bool,
}

impl RaftSettings {
    pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_millis(500);
    pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_SNAPSHOT_LOGS: u64 = 5000;
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Settings with the default timeouts and snapshot policy.
    pub fn new(
        node: impl Into<String>,
        members: Vec<String>,
        replication_factor: usize,
        transport: Arc<dyn RaftTransport>,
    ) -> Self {
        RaftSettings {
            node: node.into(),
            members,
            replication_factor,
            transport,
            rpc_timeout: Self::DEFAULT_RPC_TIMEOUT,
            snapshot_timeout: Self::DEFAULT_SNAPSHOT_TIMEOUT,
            snapshot_logs: Self::DEFAULT_SNAPSHOT_LOGS,
            ready_timeout: Self::DEFAULT_READY_TIMEOUT,
            quiet_groups: true,
        }
    }

    /// A one-node cluster: every group has this node as its only replica, and needs no transport.
    pub fn single(node: impl Into<String>) -> Self {
        let node = node.into();
        Self::new(node.clone(), vec![node], 1, Arc::new(NoTransport))
    }

    /// From the configuration: the members are the ids of `cluster.seeds`, or this node alone when
    /// there are none.
    pub fn from_config(config: &cluster_config::Config, transport: Arc<dyn RaftTransport>) -> Self {
        let mut members: Vec<String> = config.cluster.seed_list().into_iter().map(|s| s.id).collect();
        if members.is_empty() {
            members.push(config.node.id.clone());
        }
        let mut settings =
            Self::new(config.node.id.clone(), members, config.cluster.replication_factor as usize, transport);
        settings.quiet_groups = config.cluster.quiet_groups;
        settings
    }
}

impl std::fmt::Debug for RaftSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftSettings")
            .field("node", &self.node)
            .field("members", &self.members)
            .field("replication_factor", &self.replication_factor)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("snapshot_timeout", &self.snapshot_timeout)
            .field("snapshot_logs", &self.snapshot_logs)
            .field("ready_timeout", &self.ready_timeout)
            .field("quiet_groups", &self.quiet_groups)
            .finish_non_exhaustive()
    }
}

/// A follower that heard from its leader this recently refuses to vote for anyone else (openraft's
/// leader lease is the longest election timeout), which is what a leadership hand-over waits out.
pub(crate) const LEADER_LEASE: Duration = Duration::from_millis(600);

/// The shortest silence after which a follower stands for election: what bounds a leader's lease
/// (`lease::LEASE`).
pub(crate) const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(300);

/// Heartbeats every 100 ms while a group is in use, and elections after 300–600 ms of silence on top of
/// the vote lease (openraft's timers, which quiet groups turn off while the failure detector watches the
/// leader: `quiet.rs`). The vote lease is also what a hand-over waits out, so it is kept short.
pub(crate) fn raft_config(shard: ShardId, settings: &RaftSettings) -> Result<Arc<openraft::Config>, RaftStartError> {
    let config = openraft::Config {
        cluster_name: format!("shard-{shard}"),
        heartbeat_interval: 100,
        election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: LEADER_LEASE.as_millis() as u64,
        install_snapshot_timeout: settings.snapshot_timeout.as_millis() as u64,
        snapshot_max_chunk_size: 1 << 20,
        // A snapshot is a dump of the shard's keys; taking one now and then keeps the raft log short.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
        max_in_snapshot_log_to_keep: settings.snapshot_logs / 5,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| RaftStartError::Config(e.to_string()))
}
