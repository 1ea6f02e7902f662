//! What one process asks another over the cluster transport, in three families, as openraft's examples
//! separate them: data ([`Request::Shard`], [`Request::Status`]), management ([`Request::Meta`],
//! [`Request::Replicas`]) and raft ([`Request::Raft`]). Everything here travels as `codec::encode_wire`
//! (the [`WIRE_V2`](crate::codec::WIRE_V2) byte + bincode); variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::error::{ControlError, ShardError};
use crate::ids::ShardId;
use crate::meta::ClusterMeta;
use crate::ops::{Authenticate, ShardCall};

/// A fault a test asks for on one call (`X-Fault-Inject`). Only builds with the `failpoints` feature set
/// one or honour one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The entity that handles the call panics before it acts.
    Panic,
}

/// What travels with every shard call besides the call itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMeta {
    /// How long the caller waits for the answer, in ms: the callee bounds its work by it.
    pub timeout_ms: u32,
    pub fault: Option<Fault>,
}

/// The caller's session, checked by its user's entity on the node that runs the call, in the user's
/// shard, right before the call: one message does both.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCheck {
    pub user_id: String,
    pub check: Authenticate,
}

/// What one process asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Run a call on the shard's entities, here, if this node leads the shard; answered with the
    /// operation's [`ShardAnswer`].
    Shard { shard: ShardId, call: ShardCall, meta: CallMeta },
    /// The replication status of the shards this node holds ([`NodeStatus`]).
    Status,
    /// A raft message for one of this node's shard groups (opaque here).
    Raft(Vec<u8>),
    /// The newest cluster metadata record the node has ([`MetaAnswer`]).
    Meta,
    /// Membership and placement ([`ReplicaAnswer`]).
    Replicas(ReplicaOp),
    /// A [`Request::Shard`] made by a signed-in user: the shard is the user's, and the call runs only if
    /// `session` is live there (else `unauthorized`).
    Signed { shard: ShardId, session: SessionCheck, call: ShardCall, meta: CallMeta },
}

/// The answer to [`Request::Shard`] of an operation whose answer is `A`.
pub type ShardAnswer<A> = Result<A, ShardError>;

/// The answer to [`Request::Meta`]: the newest record the node has.
pub type MetaAnswer = Result<ClusterMeta, ControlError>;

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
    /// On the shard's leader: get ready to hand leadership to `to`.
    HandOver { shard: ShardId, to: String },
    /// Drain member `id` (the metadata group's leader): it takes no new replicas, gives away what it
    /// holds, and leaves the members once it holds nothing. Answered with the record.
    Drain { id: String },
    /// Stop draining member `id`: it restarted in the middle of a drain, and is wanted again.
    Undrain { id: String },
}

/// The answer to a [`ReplicaOp`]: the cluster's record after a `Join` or `Drain`, nothing otherwise.
pub type ReplicaAnswer = Result<Option<ClusterMeta>, ControlError>;

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
    use crate::error::{ApiError, NotLeader};
    use crate::ops::{ListOrders, Op, OrderList, UserOp};

    #[test]
    fn requests_and_answers_round_trip() {
        let call = ListOrders { limit: 20, cursor: None }.into_call("u1".into());
        let req = Request::Shard { shard: 7, call, meta: CallMeta { timeout_ms: 500, fault: None } };
        let back: Request = codec::decode_wire(b"req", &codec::encode_wire(&req)).expect("decodes");
        assert!(matches!(
            back,
            Request::Shard {
                shard: 7,
                call: ShardCall::User { op: UserOp::ListOrders(ListOrders { limit: 20, .. }), .. },
                meta: CallMeta { timeout_ms: 500, fault: None },
            }
        ));
        let moved = NotLeader { shard: 7, leader: Some("node-2".into()) };
        let answer: ShardAnswer<OrderList> = Err(moved.clone().into());
        let back: ShardAnswer<OrderList> = codec::decode_wire(b"ans", &codec::encode_wire(&answer)).expect("decodes");
        assert_eq!(back.err(), Some(ShardError::NotLeader(moved)));
        let refused: ShardAnswer<()> = Err(ApiError::Forbidden.into());
        let back: ShardAnswer<()> = codec::decode_wire(b"ans", &codec::encode_wire(&refused)).expect("decodes");
        assert_eq!(back, refused);
        let status = NodeStatus {
            node: "n".into(),
            shards: vec![ShardStatus { shard: 1, replicas: vec!["n".into()], leader: None, term: 3, commit_index: 9 }],
        };
        assert_eq!(codec::decode_wire::<NodeStatus>(b"s", &codec::encode_wire(&status)).expect("decodes"), status);
        // Variants are appended, never reordered: their index is what travels.
        assert_eq!(codec::encode_wire(&Request::Status), vec![codec::WIRE_V2, 1]);
        assert_eq!(codec::encode_wire(&Request::Meta), vec![codec::WIRE_V2, 3]);
    }
}
