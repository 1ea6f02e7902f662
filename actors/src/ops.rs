//! Which entity kind carries out each operation, and the one dispatch from a call that arrived over the
//! wire to its typed operation. Both are made from `playground_proto::for_each_op!`, the one list of
//! operations, and an operation whose kind does not `Handles` it does not compile.

use playground_proto::ops::*;
use playground_proto::{Op, ShardCall};

use crate::entity::{Cmd, EmailKind, Handles, OrderKind, UserKind};
use crate::shard::LocalCall;

/// An operation with the entity kind that carries it out.
pub trait LocalOp: Op {
    type Kind: Handles<Self>;

    /// The shard's command for entity `key`.
    fn local(key: String, cmd: Cmd<Self::Kind>) -> LocalCall;
}

/// What to do with a call whose operation is known only once it has been decoded.
pub trait CallVisitor {
    type Output;
    fn visit<O: LocalOp>(self, key: String, op: O) -> Self::Output;
}

/// The entity kind of each variant of `ShardCall`.
macro_rules! kind_of {
    (User) => {
        UserKind
    };
    (Order) => {
        OrderKind
    };
    (Email) => {
        EmailKind
    };
}

macro_rules! local_ops {
    ($($variant:ident => $wire:ident { $($op:ident),+ $(,)? })+) => {
        $($(
            impl LocalOp for $op {
                type Kind = kind_of!($variant);

                fn local(key: String, cmd: Cmd<kind_of!($variant)>) -> LocalCall {
                    LocalCall::$variant(key, cmd)
                }
            }
        )+)+

        /// Hands the typed operation inside `call` to `visitor`.
        pub fn dispatch<V: CallVisitor>(call: ShardCall, visitor: V) -> V::Output {
            match call {
                $(ShardCall::$variant { key, op } => match op {
                    $($wire::$op(op) => visitor.visit(key, op),)+
                },)+
            }
        }
    };
}

playground_proto::for_each_op!(local_ops);
