//! The order entity: one order and its status machine (invariant I4). It lives in its owner's shard, so
//! the owner's id routes to it and someone else's order is simply not found there.

use serde::{Deserialize, Serialize};

use super::user::order_key;
use super::{EntityCtx, EntityKind, Reply};
use crate::error::{ApiError, StoreError};
use crate::ids::Millis;
use crate::model::{HistoryEntry, OrderAction, OrderRecord};
use crate::store::LogEntry;

/// What an order entity is asked to do. Crosses the transport: variants are only ever appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrderOp {
    Get { user_id: String },
    Transition { user_id: String, action: OrderAction, if_match: Option<Vec<u64>>, now: Millis },
}

pub struct OrderKind;

impl EntityKind for OrderKind {
    const KIND: &'static str = "order";
    type State = Option<OrderRecord>;
    type Op = OrderOp;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Option<OrderRecord>, StoreError> {
        ctx.store.get(ctx.shard, &order_key(key))
    }

    async fn handle(ctx: &EntityCtx, _key: &str, st: &mut Option<OrderRecord>, op: OrderOp) -> Result<Reply, ApiError> {
        match op {
            OrderOp::Get { user_id } => owned(st, &user_id).cloned().map(Reply::Order),
            OrderOp::Transition { user_id, action, if_match, now } => {
                transition(ctx, st, &user_id, action, if_match, now).await.map(Reply::Order)
            }
        }
    }
}

fn owned<'a>(st: &'a Option<OrderRecord>, user_id: &str) -> Result<&'a OrderRecord, ApiError> {
    st.as_ref().filter(|o| o.user_id == user_id).ok_or(ApiError::NotFound("order".into()))
}

async fn transition(
    ctx: &EntityCtx,
    st: &mut Option<OrderRecord>,
    user_id: &str,
    action: OrderAction,
    if_match: Option<Vec<u64>>,
    now: Millis,
) -> Result<OrderRecord, ApiError> {
    let current = owned(st, user_id)?;
    if if_match.as_ref().is_some_and(|ok| !ok.contains(&current.version)) {
        return Err(ApiError::PreconditionFailed { current: current.version });
    }
    let to =
        current.status.apply(action).ok_or(ApiError::InvalidTransition { status: current.status.as_str().into() })?;
    let mut next = current.clone();
    // History stays ordered even if the wall clock steps back.
    let at = now.max(current.updated_at);
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
