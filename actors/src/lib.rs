//! The actor layer of Microservices Playground: entities (users, orders, email claims) as supervised
//! actors grouped into shards, their durable state in sled, and [`Cluster`], the one entry point the
//! gateway calls.
//!
//! - `cluster`: every API operation, routed to the owning shard with a timeout.
//! - `node`: starts a node's actor system; the shard supervisor.
//! - `shard`: the shard actor, which activates, passivates and supervises entities.
//! - `entity`: the generic entity actor and the user, order and email kinds.
//! - `store`: sled, the group committer, and the `ShardLog` seam (command → log entry → apply).
//! - `raft`: the other `ShardLog`: each shard's log as an openraft group, durable through the committer.
//! - `rebalance`: what a placement driver should move (replicas, leaderships) to balance the shards over the
//!   current hosts after a join, drain or loss; pure functions.
//! - `meta`: the cluster's members and shard placement, one record kept by the metadata raft group.
//! - `placement_driver`: joins, and the driver that moves replicas and leaderships to where `rebalance`
//!   says, one raft membership change at a time per shard.
//! - `model`, `validate`: records, views, request rules. `codec`: versioned record encoding.
//! - `security`: argon2id passwords and session tokens. `ids`: ids, key → shard, time.
//! - `metrics`: Prometheus metrics of actors and storage.
//! - `transport`: the cluster transport: ractor_cluster sessions to the seeds and the members that joined, calls to a peer's endpoint,
//!   the heartbeat failure detector.
//!
//! Supervision tree of a node:
//!
//! ```text
//! ShardSupervisor
//! └── Shard × shard_count
//!     └── EntityActor<UserKind | OrderKind | EmailKind>, one per live entity
//! ```

mod cluster;
mod codec;
mod entity;
mod error;
mod ids;
mod meta;
pub mod metrics;
mod model;
mod node;
mod placement_driver;
mod protocol;
mod raft;
pub mod rebalance;
mod security;
mod shard;
mod start;
mod store;
mod transport;
mod validate;

pub use cluster::{
    answer, CallOptions, Cluster, ClusterView, CreatedOrder, LocalShards, Peer, Principal, RaftHandler, Remote,
    RemoteError, Router,
};
pub use error::{ApiError, FieldError, StoreError};
pub use ids::{new_id, now_millis, rfc3339, set_clock_skew, shard_of, ShardId};
pub use meta::{ClusterMeta, MemberRecord, MetaAnswer, META_KEY};
pub use model::{NewSession, OrderAction, OrderPage, OrderView, SessionView, UserView};
pub use protocol::{NodeStatus, Request, ShardCall, ShardStatus};
pub use raft::{
    node_id_of, placement, GroupStatus, NoTransport, NodeId, RaftLog, RaftSettings, RaftStartError, RaftTransport,
    META_REPLICATION,
};
pub use start::{start_gateway, start_node, GatewayHandle, NodeHandle, StartError};
pub use store::{LocalLog, LogEntry, Op, ShardLog, Store};
pub use transport::{CallHandler, PeerState, PeerStatus, Role, Transport, TransportConfig, TransportError};
pub use validate::{CreateOrderRequest, CreateUserRequest, LoginRequest, UpdateUserRequest};
