//! Errors as RFC 9457 problem details: the one place where a failure becomes a status and a `code`.

use actors::{ApiError, FieldError};
use http::StatusCode;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// For 405: the methods the path takes.
    pub allow: Vec<&'static str>,
    /// Seconds for `Retry-After`, when the answer knows better than the configured default.
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), errors: vec![], allow: vec![], retry_after: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn title(&self) -> &'static str {
        match self.code {
            "bad_request" => "Bad request",
            "unauthorized" => "Unauthorized",
            "invalid_credentials" => "Invalid credentials",
            "forbidden" => "Forbidden",
            "not_found" => "Not found",
            "method_not_allowed" => "Method not allowed",
            "email_taken" => "Email already registered",
            "invalid_transition" => "Invalid order transition",
            "cannot_drain" => "Cannot drain the node",
            "precondition_failed" => "Precondition failed",
            "payload_too_large" => "Payload too large",
            "unsupported_media_type" => "Unsupported media type",
            "validation_failed" => "Validation failed",
            "idempotency_key_reused" => "Idempotency key reused",
            "rate_limited" => "Too many requests",
            "unavailable" => "Service unavailable",
            "timeout" => "Gateway timeout",
            _ => "Error",
        }
    }

    /// Whether the client should come back later (`Retry-After`).
    pub fn retryable(&self) -> bool {
        matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS)
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::EmailTaken | ApiError::InvalidTransition { .. } | ApiError::CannotDrain(_) => {
                StatusCode::CONFLICT
            }
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::NotLeader { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        };
        let errors = match &e {
            ApiError::Validation(list) => list.clone(),
            _ => vec![],
        };
        Problem { status, code: e.code(), detail: e.to_string(), errors, allow: vec![], retry_after: None }
    }
}

#[derive(Serialize)]
pub struct ProblemBody<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub detail: &'a str,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    pub errors: &'a [FieldError],
}

impl Problem {
    pub fn body<'a>(&'a self, request_id: &'a str) -> ProblemBody<'a> {
        ProblemBody {
            kind: format!("/problems/{}", self.code),
            title: self.title(),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            request_id,
            errors: &self.errors,
        }
    }
}
