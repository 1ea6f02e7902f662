//! The errors a caller of the cluster can see. The gateway maps each variant to one HTTP status and one
//! stable `code` (design/API.md), in one place.

/// One failing field of a request, with its path (`items[0].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Crosses the cluster transport (bincode), so variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing, malformed, expired or revoked token")]
    Unauthorized,
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("the resource belongs to another user")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(String),
    #[error("the email is already registered")]
    EmailTaken,
    #[error("the order is {status}: the action is not allowed from that status")]
    InvalidTransition { status: String },
    #[error("If-Match does not name the current version, {current}")]
    PreconditionFailed { current: u64 },
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the Idempotency-Key was used before with a different request body")]
    IdempotencyKeyReused,
    #[error("{0}")]
    Unavailable(String),
    #[error("the outcome of the call is unknown; it is safe to retry with the same Idempotency-Key")]
    Timeout,
    /// A drain the cluster cannot carry out: the other members could not hold every shard's replicas.
    #[error("{0}")]
    CannotDrain(String),
    /// This node does not lead the shard (any more): nothing was done, so the call can go to `leader`.
    #[error("shard {shard} is led elsewhere{}", leader.as_ref().map(|l| format!(" (by {l})")).unwrap_or_default())]
    NotLeader { shard: u32, leader: Option<String> },
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable machine-readable code of design/API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::EmailTaken => "email_taken",
            ApiError::InvalidTransition { .. } => "invalid_transition",
            ApiError::PreconditionFailed { .. } => "precondition_failed",
            ApiError::Validation(_) => "validation_failed",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Unavailable(_) | ApiError::NotLeader { .. } => "unavailable",
            ApiError::Timeout => "timeout",
            ApiError::CannotDrain(_) => "cannot_drain",
        }
    }
}

/// A failure of the storage layer. It never reaches a client as such: the cluster answers
/// `unavailable`, since nothing was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the commit thread has stopped")]
    Closed,
    /// This node does not lead the shard: nothing was proposed.
    #[error("shard {shard} is led elsewhere{}", leader.as_ref().map(|l| format!(" (by {l})")).unwrap_or_default())]
    NotLeader { shard: crate::ids::ShardId, leader: Option<String> },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { shard, leader } => ApiError::NotLeader { shard, leader },
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}
