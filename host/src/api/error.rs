//! The one error shape of the API: `{"error":{"code":"...","message":"..."}}`
//! with a fitting status, plus extra fields for some codes (a conflict's
//! `current_version`, a schema violation's `path`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::dispatch::DispatchError;
use crate::log::LogError;

/// An API error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// 400: the request is malformed (syntax, missing or wrong attributes, bad query values).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message));
        error.extend(self.extra);
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let message = e.to_string();
        match e {
            LogError::UnknownTopic(topic) => {
                ApiError::not_found("unknown_topic", message).with("topic", topic)
            }
            LogError::UnknownPartition { .. } => ApiError::not_found("unknown_partition", message),
            LogError::TopicExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "topic_exists", message)
            }
            LogError::InvalidTopicName(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", message)
            }
            LogError::EventTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", message)
            }
            LogError::Invalid(_) => ApiError::bad_request(message),
            LogError::VersionConflict {
                current, expected, ..
            } => ApiError::new(StatusCode::CONFLICT, "version_conflict", message)
                .with("current_version", current)
                .with("expected_version", expected),
            LogError::OffsetConflict { .. } | LogError::StateEntryGone { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            LogError::DeadLetterGone(_) => ApiError::not_found("unknown_dead_letter", message),
            LogError::Closed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            _ => {
                tracing::error!(error = %message, "log failure answering a request");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", message)
            }
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let message = e.to_string();
        match e {
            DispatchError::UnknownDeadLetter(_) => {
                ApiError::not_found("unknown_dead_letter", message)
            }
            DispatchError::ReplayInProgress(_) => {
                ApiError::new(StatusCode::CONFLICT, "replay_in_progress", message)
            }
            DispatchError::PluginNotLoaded(_) => {
                ApiError::new(StatusCode::CONFLICT, "plugin_not_loaded", message)
            }
            DispatchError::UnknownPlugin(_) => ApiError::not_found("unknown_plugin", message),
            DispatchError::NotSubscribed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_subscribed", message)
            }
            DispatchError::OffsetBeyondEnd { end, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "offset_out_of_range",
                message,
            )
            .with("end_offset", end),
            DispatchError::NotWorkedHere { .. } => {
                ApiError::new(StatusCode::CONFLICT, "partition_not_worked_here", message)
            }
            DispatchError::SeekInProgress { .. } => {
                ApiError::new(StatusCode::CONFLICT, "seek_in_progress", message)
            }
            DispatchError::SeekTimeout { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "seek_timeout", message)
            }
            DispatchError::Log(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
