//! The order entity: one order and its status machine (invariant I4). It lives in its owner's shard, so
//! the owner's id routes to it and someone else's order is simply not found there.

use playground_proto::ops::{GetOrder, TransitionOrder};
use playground_proto::{ApiError, HistoryEntry, LogEntry, OrderRecord, ShardError};
use shardlog::StoreError;

use super::user::order_key;
use super::{Answer, EntityCtx, EntityKind, Handles};

pub struct OrderKind;

impl EntityKind for OrderKind {
    const KIND: &'static str = "order";
    type State = Option<OrderRecord>;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        ctx.store.get(ctx.shard, &order_key(key))
    }

    fn is_absent(state: &Option<OrderRecord>) -> bool {
        state.is_none()
    }
}

impl Handles<GetOrder> for OrderKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(_ctx: &EntityCtx, _key: &str, st: &mut Option<OrderRecord>, op: GetOrder) -> Answer<GetOrder> {
        Ok(owned(st, &op.user_id)?.clone())
    }
}

impl Handles<TransitionOrder> for OrderKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(
        ctx: &EntityCtx,
        _key: &str,
        st: &mut Option<OrderRecord>,
        op: TransitionOrder,
    ) -> Answer<TransitionOrder> {
        transition(ctx, st, op).await
    }
}

fn owned<'a>(st: &'a Option<OrderRecord>, user_id: &str) -> Result<&'a OrderRecord, ApiError> {
    st.as_ref().filter(|o| o.user_id == user_id).ok_or(ApiError::NotFound("order".into()))
}

async fn transition(
    ctx: &EntityCtx,
    st: &mut Option<OrderRecord>,
    op: TransitionOrder,
) -> Result<OrderRecord, ShardError> {
    let current = owned(st, &op.user_id)?;
    if op.if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
        return Err(ApiError::PreconditionFailed { current: current.version }.into());
    }
    let to = current
        .status
        .apply(op.action)
        .ok_or(ApiError::InvalidTransition { status: current.status.as_str().into() })?;
    let mut next = current.clone();
    // History stays ordered even if the wall clock steps back.
    let at = op.now.max(current.updated_at);
    next.status = to;
    next.version += 1;
    next.updated_at = at;
    next.history.push(HistoryEntry { status: to, at });
    let mut entry = LogEntry::default();
    entry.put(order_key(&next.id), &next);
    ctx.commit(entry).await?;
    *st = Some(next.clone());
    Ok(next)
}
