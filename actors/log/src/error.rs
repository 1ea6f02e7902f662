//! What can go wrong below the entities.

use playground_proto::{ApiError, DecodeError, NotLeader, ShardError, ShardId};

/// A failure of the storage layer. It never reaches a client as such: the cluster answers `unavailable`,
/// since nothing was acknowledged, or routes to the leader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the commit thread has stopped")]
    Closed,
    /// This node does not lead the shard: nothing was proposed.
    #[error("shard {shard} is led elsewhere{}", leader.as_ref().map(|l| format!(" (by {l})")).unwrap_or_default())]
    NotLeader { shard: ShardId, leader: Option<String> },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        StoreError::Corrupt { key: e.key, reason: e.reason }
    }
}

impl From<StoreError> for ShardError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { shard, leader } => ShardError::NotLeader(NotLeader { shard, leader }),
            other => ShardError::Api(ApiError::Unavailable(other.to_string())),
        }
    }
}

impl From<StoreError> for playground_proto::ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { leader, .. } => playground_proto::ControlError::NotLeader { leader },
            other => playground_proto::ControlError::Unavailable(other.to_string()),
        }
    }
}
