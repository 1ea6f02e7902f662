//! The email entity: who holds an email address, cluster-wide (invariant I3). Registrations for one email
//! all meet here, so exactly one claim wins however they race.

use playground_proto::ops::{ClaimEmail, ClaimOutcome, LookupEmail, ReleaseEmail, TakeoverEmail};
use playground_proto::{EmailClaim, LogEntry, ShardError};
use shardlog::StoreError;

use super::{Answer, EntityCtx, EntityKind, Handles};

fn claim_key(email_key: &str) -> String {
    format!("e/{email_key}")
}

pub struct EmailKind;

type Claim = Option<EmailClaim>;

impl EntityKind for EmailKind {
    const KIND: &'static str = "email";
    type State = Claim;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Claim, StoreError> {
        ctx.store.get(ctx.shard, &claim_key(key))
    }

    fn is_absent(state: &Claim) -> bool {
        state.is_none()
    }
}

impl Handles<ClaimEmail> for EmailKind {
    // Claiming an unheld email is the write.
    const ABSENT_NOOP: bool = false;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut Claim, op: ClaimEmail) -> Answer<ClaimEmail> {
        match st {
            Some(c) if c.user_id == op.user_id => Ok(ClaimOutcome::Claimed),
            Some(c) => Ok(ClaimOutcome::HeldBy(c.clone())),
            None => {
                set(ctx, key, st, Some(EmailClaim { user_id: op.user_id, claimed_at: op.now })).await?;
                Ok(ClaimOutcome::Claimed)
            }
        }
    }
}

impl Handles<TakeoverEmail> for EmailKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut Claim, op: TakeoverEmail) -> Answer<TakeoverEmail> {
        match st {
            Some(c) if c.user_id == op.from => {
                set(ctx, key, st, Some(EmailClaim { user_id: op.to, claimed_at: op.now })).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Handles<LookupEmail> for EmailKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(_ctx: &EntityCtx, _key: &str, st: &mut Claim, _op: LookupEmail) -> Answer<LookupEmail> {
        Ok(st.clone())
    }
}

impl Handles<ReleaseEmail> for EmailKind {
    const ABSENT_NOOP: bool = true;

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut Claim, op: ReleaseEmail) -> Answer<ReleaseEmail> {
        match st {
            Some(c) if c.user_id == op.user_id => set(ctx, key, st, None).await,
            _ => Ok(()),
        }
    }
}

async fn set(ctx: &EntityCtx, key: &str, st: &mut Claim, next: Claim) -> Result<(), ShardError> {
    let mut entry = LogEntry::default();
    match &next {
        Some(c) => entry.put(claim_key(key), c),
        None => entry.delete(claim_key(key)),
    };
    ctx.commit(entry).await?;
    *st = next;
    Ok(())
}
