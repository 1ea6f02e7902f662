//! Append → durable → applied: how a shard's changes reach disk, on one node or replicated.
//!
//! - `store`: one sled `Db` per process, one tree per shard, and the committer thread that makes every
//!   write durable (`flush` + `fdatasync`) in group commits. The only code that writes sled.
//! - `apply`: the one function that applies a `LogEntry` to a shard's state machine, for both logs.
//! - [`ShardLog`]: the seam between entities and replication. [`LocalLog`] is the single-replica log;
//!   [`RaftLog`] (`raft`) replicates each shard as an openraft group, durable through the same committer.
//! - `error`: [`StoreError`]. `metrics`: `playground_storage_*` (and `raft::metrics`, `playground_raft_*`).
//!
//! Architecture invariant: only this crate touches sled, and only the committer thread writes to it.

mod apply;
mod error;
pub mod metrics;
mod raft;
mod store;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use error::StoreError;
pub use raft::{
    GroupStatus, NoTransport, RaftLog, RaftSettings, RaftStartError, RaftTransport, Reachability, META_REPLICATION,
};
pub use store::{Leadership, LocalLog, ShardLog, Store};
