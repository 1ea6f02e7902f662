//! Stored records and the JSON views the API returns. Records are written through `codec` with a version
//! byte; a field is never edited in place: a new format gets a new version.

use serde::{Deserialize, Serialize};

use crate::ids::{rfc3339, Millis};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
            version: u.version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub user_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub last_seen_at: String,
}

impl From<&SessionRecord> for SessionView {
    fn from(s: &SessionRecord) -> Self {
        SessionView {
            session_id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            last_seen_at: rfc3339(s.last_seen_at),
        }
    }
}

/// A new session as `POST /v1/sessions` returns it: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSession {
    #[serde(flatten)]
    pub session: SessionView,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryView {
    pub status: &'static str,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    pub id: String,
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub currency: String,
    pub total_cents: i64,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub history: Vec<HistoryView>,
}

impl From<&OrderRecord> for OrderView {
    fn from(o: &OrderRecord) -> Self {
        OrderView {
            id: o.id.clone(),
            user_id: o.user_id.clone(),
            items: o.items.clone(),
            currency: o.currency.clone(),
            total_cents: o.total_cents,
            status: o.status.as_str(),
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
            version: o.version,
            history: o.history.iter().map(|h| HistoryView { status: h.status.as_str(), at: rfc3339(h.at) }).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
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
