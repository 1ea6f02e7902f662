//! Every type of Microservices Playground that crosses the cluster transport or reaches disk, and the
//! codec that puts a version byte in front of each. This crate depends on nothing of the workspace: the
//! storage, control-plane and actor crates above it share these types, and none of them owns them.
//!
//! - `codec`: version byte + bincode 2, for stored records ([`RECORD_V1`]) and messages ([`WIRE_V2`]).
//! - `ids`: shard ids, the key → shard hash, ids, the clock seam.
//! - `error`: [`ErrorCode`] (every stable code with its HTTP status), [`ApiError`], and the signals that
//!   are not API errors: [`NotLeader`], [`ShardError`], [`ControlError`].
//! - `records`: what each key of a shard's tree holds.
//! - `log`: [`LogEntry`] (an entity's changes) and [`Packed`] (a raft entry of them).
//! - `ops`: one struct per entity operation with its [`Op::Answer`], and the wire enums that carry them.
//! - `protocol`: [`Request`] and its answers, in three families (data, management, raft).
//! - `meta`: [`ClusterMeta`], the members and placement record.
//! - `placement`: node ids and the first placement rule, computed alike on every process.

pub mod codec;
mod error;
mod ids;
mod log;
mod meta;
pub mod ops;
mod placement;
mod protocol;
mod records;

pub use codec::{decode, decode_wire, encode, encode_wire, DecodeError, MAX_DECODE_BYTES, RECORD_V1, WIRE_V2};
pub use error::{ApiError, ControlError, ErrorCode, FieldError, NotLeader, ShardError};
#[cfg(feature = "failpoints")]
pub use ids::SkewedClock;
pub use ids::{email_key, install_clock, new_id, now_millis, shard_of, Clock, Millis, NodeId, ShardId, SystemClock};
pub use log::{Applied, LogEntry, LogIndex, Packed, Write};
pub use meta::{ClusterMeta, MemberRecord, META_KEY};
pub use ops::{Entity, Op, ShardCall};
pub use placement::{node_id_of, placement};
pub use protocol::{
    CallMeta, Fault, MetaAnswer, NodeStatus, ReplicaAnswer, ReplicaOp, Request, SessionCheck, ShardAnswer, ShardStatus,
};
pub use records::{
    EmailClaim, HistoryEntry, IdempotencyRecord, NewOrder, OrderAction, OrderItem, OrderRecord, OrderStatus,
    SessionRecord, UserRecord, UserSlot,
};
