//! Errors as RFC 9457 problem details: the one place where a failure becomes an answer. Its status,
//! `code` and title all come from one [`ErrorCode`], whose single mapping lives with the code itself.

use http::StatusCode;
use playground_proto::{ApiError, ErrorCode, FieldError};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// For 405: the methods the path takes.
    pub allow: Vec<&'static str>,
    /// Seconds for `Retry-After`, when the answer knows better than the configured default.
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), errors: vec![], allow: vec![], retry_after: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Whether the client should come back later (`Retry-After`).
    pub fn retryable(&self) -> bool {
        matches!(self.code, ErrorCode::Unavailable | ErrorCode::RateLimited)
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        let errors = match &e {
            ApiError::Validation(list) => list.clone(),
            _ => vec![],
        };
        Problem { code: e.code(), detail: e.to_string(), errors, allow: vec![], retry_after: None }
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
            kind: format!("/problems/{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.http_status(),
            code: self.code.as_str(),
            detail: &self.detail,
            request_id,
            errors: &self.errors,
        }
    }
}
