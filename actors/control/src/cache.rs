//! [`PlacementCache`]: the newest cluster metadata record this process has seen, and the replicas of
//! every shard that routing goes by. The keeper and the driver write it; the router only reads it.

use std::sync::{Arc, RwLock};

use playground_proto::{ClusterMeta, ShardId};
use tokio::sync::Notify;

pub struct PlacementCache {
    shard_count: u32,
    /// The replicas of every shard: where to look when no leader is known. The record's placement once
    /// known; until then, the placement computed from the seeds.
    replicas: RwLock<Arc<Vec<Vec<String>>>>,
    /// The newest record seen.
    meta: RwLock<Option<Arc<ClusterMeta>>>,
    /// Notified when a call has tried every replica it knew of a shard: the placement may be out of date,
    /// so the keeper looks again soon.
    stale: Notify,
}

impl PlacementCache {
    /// A cache that routes by `replicas` (one list per shard) until a record is offered.
    pub fn new(shard_count: u32, replicas: Vec<Vec<String>>) -> Self {
        PlacementCache {
            shard_count,
            replicas: RwLock::new(Arc::new(replicas)),
            meta: RwLock::new(None),
            stale: Notify::new(),
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The replicas of `shard` routing goes by, preferred leader first.
    pub fn replicas(&self, shard: ShardId) -> Vec<String> {
        self.replicas.read().ok().and_then(|r| r.get(shard as usize).cloned()).unwrap_or_default()
    }

    /// The newest record seen, if any.
    pub fn meta(&self) -> Option<Arc<ClusterMeta>> {
        self.meta.read().ok().and_then(|m| m.clone())
    }

    /// Takes `meta` if it is newer than the record held and fits this cluster's shard count, and routes by
    /// its placement from then on; returns whether it was taken. An older record (from a replica that
    /// lags) is ignored, so the record only moves forward.
    pub fn offer(&self, meta: ClusterMeta) -> bool {
        if !meta.fits(self.shard_count) {
            tracing::warn!(
                version = meta.version,
                shards = meta.shard_count,
                "cluster metadata of another shape ignored"
            );
            return false;
        }
        let Ok(mut held) = self.meta.write() else { return false };
        if held.as_ref().is_some_and(|h| h.version >= meta.version) {
            return false;
        }
        if let Ok(mut replicas) = self.replicas.write() {
            *replicas = Arc::new(meta.placement.clone());
        }
        tracing::info!(version = meta.version, members = meta.members.len(), "cluster metadata");
        *held = Some(Arc::new(meta));
        true
    }

    /// Says that routing found no leader among a shard's replicas: the keeper looks again soon.
    pub fn mark_stale(&self) {
        self.stale.notify_one();
    }

    /// Resolves once [`PlacementCache::mark_stale`] was called.
    pub async fn stale(&self) {
        self.stale.notified().await;
    }
}
