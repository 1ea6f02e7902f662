//! The JSON views the API answers with, made from stored records: timestamps in RFC 3339, statuses as
//! their names, and never a password hash or a token verifier.

use playground_proto::ops::OrderList;
use playground_proto::{Millis, OrderItem, OrderRecord, SessionRecord, UserRecord};
use serde::Serialize;

/// RFC 3339 in UTC with millisecond precision, as the API prints timestamps.
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
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
pub struct NewSessionView {
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

impl From<&actors::NewSession> for NewSessionView {
    fn from(s: &actors::NewSession) -> Self {
        NewSessionView { session: SessionView::from(&s.session), token: s.token.clone() }
    }
}

impl From<&OrderList> for OrderPage {
    fn from(page: &OrderList) -> Self {
        OrderPage { items: page.orders.iter().map(OrderView::from).collect(), next_cursor: page.next_cursor.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
