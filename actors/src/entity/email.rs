//! The email entity: who holds an email address, cluster-wide (invariant I3). Registrations for one email
//! all meet here, so exactly one claim wins however they race.

use serde::{Deserialize, Serialize};

use super::{EntityCtx, EntityKind, Reply};
use crate::error::{ApiError, StoreError};
use crate::ids::Millis;
use crate::model::EmailClaim;
use crate::store::LogEntry;

fn claim_key(email_key: &str) -> String {
    format!("e/{email_key}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The email is now held by the caller (or already was).
    Claimed,
    HeldBy(EmailClaim),
}

/// What an email entity is asked to do. Crosses the transport: variants are only ever appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EmailOp {
    Claim {
        user_id: String,
        now: Millis,
    },
    /// Moves a claim from a holder that was found not to own the email any more; refused if the holder
    /// changed in between.
    Takeover {
        from: String,
        to: String,
        now: Millis,
    },
    Lookup,
    Release {
        user_id: String,
    },
}

pub struct EmailKind;

impl EntityKind for EmailKind {
    const KIND: &'static str = "email";
    type State = Option<EmailClaim>;
    type Op = EmailOp;

    fn load(ctx: &EntityCtx, key: &str) -> Result<Option<EmailClaim>, StoreError> {
        ctx.store.get(ctx.shard, &claim_key(key))
    }

    async fn handle(ctx: &EntityCtx, key: &str, st: &mut Option<EmailClaim>, op: EmailOp) -> Result<Reply, ApiError> {
        match op {
            EmailOp::Claim { user_id, now } => match st {
                Some(c) if c.user_id == user_id => Ok(Reply::Claim(ClaimOutcome::Claimed)),
                Some(c) => Ok(Reply::Claim(ClaimOutcome::HeldBy(c.clone()))),
                None => set(ctx, key, st, Some(EmailClaim { user_id, claimed_at: now }))
                    .await
                    .map(|_| Reply::Claim(ClaimOutcome::Claimed)),
            },
            EmailOp::Takeover { from, to, now } => match st {
                Some(c) if c.user_id == from => set(ctx, key, st, Some(EmailClaim { user_id: to, claimed_at: now }))
                    .await
                    .map(|_| Reply::Bool(true)),
                _ => Ok(Reply::Bool(false)),
            },
            EmailOp::Lookup => Ok(Reply::MaybeClaim(st.clone())),
            EmailOp::Release { user_id } => match st {
                Some(c) if c.user_id == user_id => set(ctx, key, st, None).await.map(|_| Reply::Done),
                _ => Ok(Reply::Done),
            },
        }
    }
}

async fn set(
    ctx: &EntityCtx,
    key: &str,
    st: &mut Option<EmailClaim>,
    next: Option<EmailClaim>,
) -> Result<(), ApiError> {
    let mut entry = LogEntry::default();
    match &next {
        Some(c) => entry.put(claim_key(key), c),
        None => entry.delete(claim_key(key)),
    };
    ctx.commit(entry).await?;
    *st = next;
    Ok(())
}
