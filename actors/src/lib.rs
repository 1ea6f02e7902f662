//! The data plane of Microservices Playground: entities (users, orders, email claims) as supervised
//! actors grouped into shards, the router that takes each call to its shard's leader, and [`Cluster`],
//! the one entry point the gateway calls. It stands on the crates below it: `playground_proto` (the
//! types that travel and are stored), `shardlog` (storage and replication), `control_plane` (members
//! and placement) and `cluster_transport`.
//!
//! - `cluster`: [`Cluster`], every API operation, each one typed call to the shard that owns it.
//! - `router`: where each shard call runs: here when this node leads the shard, else on the leader.
//! - `server`: answers other processes' requests, one handler per family (data, management, raft).
//! - `ops`: which entity kind carries out each operation, and the dispatch of calls from the wire.
//! - `supervisor`: the shard supervisor and the table of shard actors.
//! - `shard`: the shard actor, which activates, passivates and supervises entities.
//! - `entity`: the generic entity actor and the user, order and email kinds.
//! - `security`: argon2id passwords and session tokens.
//! - `adapters`: the transport as the raft log's transport.
//! - `start`: how a node and a gateway are composed.
//! - `metrics`: `playground_actor_*`.
//!
//! Supervision tree of a node:
//!
//! ```text
//! ShardSupervisor
//! └── Shard × shard_count
//!     └── EntityActor<UserKind | OrderKind | EmailKind>, one per live entity
//! ```

mod adapters;
mod cluster;
mod entity;
pub mod metrics;
mod ops;
mod router;
mod security;
mod server;
mod shard;
mod start;
mod supervisor;

pub use cluster::{CallOptions, Cluster, ClusterView, MemberView, NewSession, NewUser, Principal, UserChanges};
pub use start::{start_gateway, start_node, GatewayHandle, NodeHandle, StartError};
