//! [`ControlHandle`]: all the control plane needs of its process, and all the rest of the process needs of
//! the control plane: who this process is, the placement cache, its replicas (a node), and the transport.

use std::sync::Arc;

use cluster_transport::Remote;
use shardlog::{ShardLog, Store};

use crate::cache::PlacementCache;

/// The shards a node holds: its store and its log.
pub struct LocalReplicas {
    pub store: Arc<Store>,
    pub log: Arc<dyn ShardLog>,
}

pub struct ControlHandle {
    /// This process's name in the cluster.
    pub me: String,
    pub cache: PlacementCache,
    /// A node's replicas; none on a gateway.
    pub local: Option<LocalReplicas>,
    /// The other members; none in a one-node cluster.
    pub remote: Option<Arc<dyn Remote>>,
}

impl ControlHandle {
    pub fn shard_count(&self) -> u32 {
        self.cache.shard_count()
    }
}
