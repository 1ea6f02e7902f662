//! The shard protocol: every call a shard's entities answer, as data, so that it runs on this node or
//! travels to the shard's leader on another node unchanged. Everything here crosses the transport as
//! versioned bincode (`codec`): variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::entity::{EmailOp, OrderOp, Reply, UserOp};
use crate::error::ApiError;
use crate::ids::ShardId;

/// One call to one entity of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardCall {
    User { key: String, op: UserOp },
    Order { key: String, op: OrderOp },
    Email { key: String, op: EmailOp },
}

impl ShardCall {
    /// The entity kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ShardCall::User { .. } => "user",
            ShardCall::Order { .. } => "order",
            ShardCall::Email { .. } => "email",
        }
    }

    /// Whether the call changes nothing, so that repeating it is always safe.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ShardCall::User {
                op: UserOp::Get | UserOp::Credentials { .. } | UserOp::ListSessions { .. } | UserOp::ListOrders { .. },
                ..
            } | ShardCall::Order { op: OrderOp::Get { .. }, .. }
                | ShardCall::Email { op: EmailOp::Lookup, .. }
        )
    }

    /// Whether a call whose outcome is unknown may be sent again: reads, and writes that carry their own
    /// deduplication (an order create with an idempotency key; session checks, whose only write is
    /// `last_seen_at`).
    pub fn retry_safe(&self) -> bool {
        self.is_read()
            || matches!(
                self,
                ShardCall::User {
                    op: UserOp::CreateOrder { idempotency_key: Some(_), .. } | UserOp::Authenticate { .. },
                    ..
                }
            )
    }
}

/// What one process asks another over the cluster transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Run a call on the shard's entities, here, if this node leads the shard.
    Shard { shard: ShardId, call: ShardCall, inject_panic: bool },
    /// The replication status of the shards this node holds.
    Status,
    /// A raft message for one of this node's shard groups (opaque here).
    Raft(Vec<u8>),
    /// The newest cluster metadata record the node has (`crate::meta::MetaAnswer`).
    Meta,
    /// Membership and placement: a join, a replica to open or close, a membership change, an election
    /// (`crate::placement_driver`; answered with a `ReplicaAnswer`).
    Replicas(crate::placement_driver::ReplicaOp),
}

/// The answer to [`Request::Shard`].
pub type ShardAnswer = Result<Reply, ApiError>;

/// One shard as a node that holds a replica of it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: ShardId,
    pub replicas: Vec<String>,
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub shards: Vec<ShardStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn requests_and_answers_round_trip() {
        let req = Request::Shard {
            shard: 7,
            call: ShardCall::User { key: "u1".into(), op: UserOp::ListOrders { limit: 20, cursor: None } },
            inject_panic: false,
        };
        let back: Request = codec::decode(b"req", &codec::encode(&req)).expect("decodes");
        assert!(matches!(
            back,
            Request::Shard { shard: 7, call: ShardCall::User { op: UserOp::ListOrders { limit: 20, .. }, .. }, .. }
        ));
        let answer: ShardAnswer = Err(ApiError::NotLeader { shard: 7, leader: Some("node-2".into()) });
        let back: ShardAnswer = codec::decode(b"ans", &codec::encode(&answer)).expect("decodes");
        assert_eq!(back.err(), Some(ApiError::NotLeader { shard: 7, leader: Some("node-2".into()) }));
        let status = NodeStatus {
            node: "n".into(),
            shards: vec![ShardStatus { shard: 1, replicas: vec!["n".into()], leader: None, term: 3, commit_index: 9 }],
        };
        assert_eq!(codec::decode::<NodeStatus>(b"s", &codec::encode(&status)).expect("decodes"), status);
        // Variants are appended, never reordered: their index is what travels.
        assert_eq!(codec::encode(&Request::Status), vec![codec::RECORD_V1, 1]);
        assert_eq!(codec::encode(&Request::Meta), vec![codec::RECORD_V1, 3]);
    }

    #[test]
    fn only_reads_and_deduplicated_writes_are_retry_safe() {
        let read = ShardCall::Order { key: "o".into(), op: OrderOp::Get { user_id: "u".into() } };
        assert!(read.is_read() && read.retry_safe());
        let pay = ShardCall::Order {
            key: "o".into(),
            op: OrderOp::Transition {
                user_id: "u".into(),
                action: crate::model::OrderAction::Pay,
                if_match: None,
                now: 0,
            },
        };
        assert!(!pay.is_read() && !pay.retry_safe());
    }
}
