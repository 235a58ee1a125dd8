//! The error answer of every endpoint (docs/api.md "Errors"):
//! `{"error": {"code", "status", "message"}}`, with AIP-193 status names.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_app::AppError;
use serde_json::json;

/// An error answer: `{"error": {"code", "status", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

/// The AIP-193 status name of an HTTP status.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "FAILED_PRECONDITION",
        413 => "PAYLOAD_TOO_LARGE",
        422 => "ABORTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The HTTP status and status name of a use case's error: what the user
/// gave (exit 2) is a 400, the store or the machine (exit 3) a 500.
pub fn status_of(error: &AppError) -> (StatusCode, &'static str) {
    let status = if error.exit_code() == cairn_app::error::EXIT_USAGE {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, status_name(status))
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        ApiError::new(status_of(&error).0, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.status.as_u16(),
            "status": status_name(self.status),
            "message": self.message,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        response
    }
}
