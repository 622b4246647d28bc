//! The one place where errors become HTTP: status code + `{"error", "message"}`.
//!
//! Internal errors are logged in full and answered with a generic sentence, so database
//! details never reach clients.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::engine::EngineError;
use starsync_protocol::api::ErrorBody;
use starsync_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The body is not JSON at all (400).
    #[error("{0}")]
    BadJson(String),
    /// Over the body limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body arrived too slowly (408): see `extract::BodyDeadline`.
    #[error("{0}")]
    Timeout(String),
    /// The blocking pool was shut down or a worker panicked.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    /// The error code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, ErrorCode) {
        use EngineError as E;
        match self {
            ApiError::Engine(e) => match e {
                E::InvalidPacket(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPacket),
                E::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
                E::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
                E::PacketGap { .. } => (StatusCode::CONFLICT, ErrorCode::PacketGap),
                E::SchemaMismatch(_) => (StatusCode::CONFLICT, ErrorCode::SchemaMismatch),
                E::PacketTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PacketTooLarge),
                E::InvalidAck(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidAck),
                E::EntityTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::EntityTooLarge),
                E::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
                E::CodeTaken(_) => (StatusCode::CONFLICT, ErrorCode::CodeTaken),
                E::AlreadyResolved(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyResolved),
                E::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
                E::TooManyChanges(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooManyChanges),
                E::TooManyStreams(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyStreams)
                }
                E::InvalidRequest(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
                }
                E::Store(_) | E::Io(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
                }
            },
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.parts();
        // A full stream table is load, not a failure: its message says what to do.
        let message = if status.is_server_error() && code != ErrorCode::TooManyStreams {
            tracing::error!(error = %self, "request failed");
            "the server failed to process the request; see the server log".to_string()
        } else {
            self.to_string()
        };
        let expected_packet_no = match self {
            ApiError::Engine(EngineError::PacketGap { expected, .. }) => Some(*expected),
            _ => None,
        };
        let mut answer = HttpResponse::build(status);
        if code == ErrorCode::TooManyStreams {
            answer.insert_header((actix_web::http::header::RETRY_AFTER, "30"));
        }
        answer.json(ErrorBody {
            error: code,
            message,
            expected_packet_no,
        })
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
