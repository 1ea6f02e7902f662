//! Errors, with the one closed list of codes a client can see.
//!
//! - [`ErrorCode`]: every stable `code` of the API (docs/api.md) with its one HTTP status and title. The
//!   gateway maps nothing else: whatever fails becomes one of these.
//! - [`ApiError`]: what an operation answers a client, one variant per code it can cause.
//! - [`NotLeader`]: a routing signal, never shown to a client: this node does not lead the shard, so the
//!   call was not carried out and may go to the leader.
//! - [`ShardError`]: what a shard call answers besides its value: an [`ApiError`] or [`NotLeader`].
//! - [`ControlError`]: what a membership or placement request answers besides its value.

use serde::{Deserialize, Serialize};

use crate::ids::ShardId;

/// The stable machine-readable codes of the API, each with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    InvalidCredentials,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    InvalidTransition,
    CannotDrain,
    PreconditionFailed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    IdempotencyKeyReused,
    RateLimited,
    Unavailable,
    Timeout,
}

impl ErrorCode {
    /// Every code, for documents and tests that must list them all.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::EmailTaken,
        ErrorCode::InvalidTransition,
        ErrorCode::CannotDrain,
        ErrorCode::PreconditionFailed,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
    ];

    /// The `code` member of a problem+json body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::CannotDrain => "cannot_drain",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status of every answer with this code: the only such mapping.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::EmailTaken | ErrorCode::InvalidTransition | ErrorCode::CannotDrain => 409,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ValidationFailed | ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// The `title` of a problem+json body.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::InvalidCredentials => "Invalid credentials",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "Not found",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::EmailTaken => "Email already registered",
            ErrorCode::InvalidTransition => "Invalid order transition",
            ErrorCode::CannotDrain => "Cannot drain the node",
            ErrorCode::PreconditionFailed => "Precondition failed",
            ErrorCode::RequestTimeout => "Request timeout",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::UnsupportedMediaType => "Unsupported media type",
            ErrorCode::ValidationFailed => "Validation failed",
            ErrorCode::IdempotencyKeyReused => "Idempotency key reused",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Timeout => "Gateway timeout",
        }
    }
}

/// One failing field of a request, with its path (`items[0].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// What an operation answers a client when it fails. Crosses the transport inside [`ShardError`], so
/// variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// A change of email or password without the right current password; which of the two never shows.
    #[error("changing the email or the password takes the account's current password")]
    CurrentPasswordRequired,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable code, and with it the HTTP status.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::EmailTaken => ErrorCode::EmailTaken,
            ApiError::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            ApiError::PreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            ApiError::Validation(_) => ErrorCode::ValidationFailed,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::CannotDrain(_) => ErrorCode::CannotDrain,
            ApiError::CurrentPasswordRequired => ErrorCode::Forbidden,
        }
    }
}

/// This node does not lead the shard (any more): nothing was done, so the call can go to `leader`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("shard {shard} is led elsewhere{}", leader.as_ref().map(|l| format!(" (by {l})")).unwrap_or_default())]
pub struct NotLeader {
    pub shard: ShardId,
    /// The leader's node name, when known.
    pub leader: Option<String>,
}

/// Why a shard call did not produce its answer. Crosses the transport: variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ShardError {
    /// The operation's own refusal (or an unknown outcome), for the client.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Not carried out here: route to the leader.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

/// Why a membership or placement request was refused. Crosses the transport: variants are only ever
/// appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    /// The request must go to the metadata group's leader (or a shard's), named when known.
    #[error("not the leader{}", leader.as_ref().map(|l| format!(" ({l} is)")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("member {0} not found")]
    UnknownMember(String),
    /// The other members could not hold every shard's replicas without the drained one.
    #[error("{0}")]
    CannotDrain(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("no answer in time")]
    Timeout,
}

impl ControlError {
    /// What a client of the admin API sees of it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::NotLeader { .. } | ControlError::Unavailable(_) => ErrorCode::Unavailable,
            ControlError::UnknownMember(_) => ErrorCode::NotFound,
            ControlError::CannotDrain(_) => ErrorCode::CannotDrain,
            ControlError::Timeout => ErrorCode::Timeout,
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownMember(id) => ApiError::NotFound(format!("member {id}")),
            ControlError::CannotDrain(why) => ApiError::CannotDrain(why),
            ControlError::Timeout => ApiError::Timeout,
            other @ (ControlError::NotLeader { .. } | ControlError::Unavailable(_)) => {
                ApiError::Unavailable(other.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_status_and_a_title() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "codes are distinct");
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code:?}");
            assert_ne!(code.title(), "", "{code:?}");
        }
        assert_eq!(ApiError::EmailTaken.code().http_status(), 409);
        assert_eq!(ApiError::from(ControlError::UnknownMember("n".into())).code(), ErrorCode::NotFound);
    }
}
