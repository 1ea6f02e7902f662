//! Stored records: what each key of a shard's tree holds (the table in ARCHITECTURE.md). Records are
//! written through `codec` with a version byte; a field is never edited in place: a new format gets a
//! new version.

use serde::{Deserialize, Serialize};

use crate::ids::Millis;

/// What `u/{user_id}` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserSlot {
    Active(UserRecord),
    /// Deleted users keep their id so that it is never reused; orders stay stored.
    Deleted {
        deleted_at: Millis,
    },
    /// A registration that was overtaken before it created the user: the id can never be created later,
    /// which is what lets another registration take the email over safely.
    Aborted {
        at: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    /// As the user wrote it, trimmed.
    pub email: String,
    pub name: String,
    /// A PHC string (argon2id); never leaves the node that holds it.
    pub password_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session_id: String,
    pub user_id: String,
    /// HMAC of the token's secret under the configured key; the secret itself is never stored.
    pub verifier: Vec<u8>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub last_seen_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

/// The order actions of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderAction {
    Pay,
    Ship,
    Deliver,
    Cancel,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The only legal moves (invariant I4); everything else is `invalid_transition`.
    pub fn apply(self, action: OrderAction) -> Option<OrderStatus> {
        use OrderAction::*;
        use OrderStatus::*;
        match (self, action) {
            (Pending, Pay) => Some(Paid),
            (Pending, Cancel) | (Paid, Cancel) => Some(Cancelled),
            (Paid, Ship) => Some(Shipped),
            (Shipped, Deliver) => Some(Delivered),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: String,
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub currency: String,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
    pub history: Vec<HistoryEntry>,
}

/// What `i/{user_id}/{key}` holds: the request an idempotency key was first used with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: Vec<u8>,
    pub order_id: String,
    pub created_at: Millis,
}

/// What `e/{normalized email}` holds: which user id claimed the email, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailClaim {
    pub user_id: String,
    pub claimed_at: Millis,
}

/// An order create that passed validation: what the user entity turns into an [`OrderRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub items: Vec<OrderItem>,
    pub currency: String,
}

impl NewOrder {
    pub fn total_cents(&self) -> i64 {
        // Bounded by 100 items × 1000 × 10^8 (the gateway's rules), far inside i64.
        self.items.iter().map(|i| i.quantity * i.unit_price_cents).sum()
    }

    /// What makes two creates "the same request" for an idempotency key.
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.currency.as_bytes());
        for i in &self.items {
            h.update((i.sku.len() as u64).to_le_bytes());
            h.update(i.sku.as_bytes());
            h.update(i.quantity.to_le_bytes());
            h.update(i.unit_price_cents.to_le_bytes());
        }
        h.finalize().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_legal_transitions_exist() {
        use OrderAction::*;
        use OrderStatus::*;
        let all = [Pending, Paid, Shipped, Delivered, Cancelled];
        let actions = [Pay, Ship, Deliver, Cancel];
        let mut legal = vec![];
        for s in all {
            for a in actions {
                if let Some(to) = s.apply(a) {
                    legal.push((s, to));
                }
            }
        }
        assert_eq!(
            legal,
            vec![(Pending, Paid), (Pending, Cancelled), (Paid, Shipped), (Paid, Cancelled), (Shipped, Delivered)]
        );
    }

    #[test]
    fn records_round_trip_through_the_codec() {
        let order = OrderRecord {
            id: "o".into(),
            user_id: "u".into(),
            items: vec![OrderItem { sku: "A-1".into(), quantity: 2, unit_price_cents: 150 }],
            currency: "EUR".into(),
            total_cents: 300,
            status: OrderStatus::Paid,
            created_at: 1,
            updated_at: 2,
            version: 2,
            history: vec![HistoryEntry { status: OrderStatus::Pending, at: 1 }],
        };
        let bytes = crate::codec::encode(&order);
        assert_eq!(crate::codec::decode::<OrderRecord>(b"o", &bytes).expect("decodes"), order);
        let slot = UserSlot::Aborted { at: 5 };
        assert_eq!(crate::codec::decode::<UserSlot>(b"u", &crate::codec::encode(&slot)).expect("decodes"), slot);
    }
}
