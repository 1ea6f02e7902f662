//! The control plane of Microservices Playground: who the members are and where each shard's replicas
//! are, as one record kept by the metadata raft group, and the tasks that keep it true.
//!
//! - `handle`: [`ControlHandle`], the narrow handle between the control plane and the rest of a process.
//! - `cache`: [`PlacementCache`], the newest record seen, which routing reads.
//! - `record`: reading, bootstrapping and changing the record on the metadata group's leader.
//! - `keeper`: the task that keeps the cache fresh and makes every member a transport peer.
//! - `client`: typed calls to other members (metadata, status, membership and placement requests).
//! - `join`: whether a node with an empty store joins a running cluster.
//! - `rebalance`: pure planning of replica moves and leadership transfers.
//! - `driver`: the placement driver, which carries the plan out by raft membership changes.
//! - `metrics`: `playground_placement_*`.
//!
//! API boundary: the management family of the wire protocol (`Request::Meta`, `Request::Replicas`),
//! answered by [`record::answer`] and [`Driver::handle`].

mod cache;
pub mod client;
mod driver;
mod edits;
mod handle;
mod join;
mod keeper;
pub mod metrics;
pub mod rebalance;
pub mod record;

pub use cache::PlacementCache;
pub use driver::{Driver, DriverSettings};
pub use handle::{ControlHandle, LocalReplicas};
pub use join::look_for_a_running_cluster;
pub use keeper::{refresh, spawn_keeper};
