//! The HTTP API v1 (the table in the product brief is the contract) on axum.
//! This module owns the only DTOs outsiders see: everything it answers is
//! built here from the library's types, and every error is an [`ApiError`].
//!
//! - `error`: the `{"error":{"code","message"}}` answer and the mapping of
//!   log and dispatch errors onto statuses.
//! - `cloudevents`: the CloudEvents HTTP binding (structured, binary, batch).
//! - `publish`: publishing to topics and appending to streams; stream reads.
//! - `topics`: topic listing, reads and the live tail (server-sent events).
//! - `admin`: plugins, dead letters, schemas, `/metrics`, `/healthz`.
//! - `dto`: the wire types of answers built from library structs.
//! - `ui`: the web console's static files at `/ui`.

mod admin;
pub mod cloudevents;
pub mod dto;
pub mod error;
mod publish;
mod topics;
mod ui;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use self::error::{ApiError, ApiResult};
use crate::config::ApiConfig;
use crate::daemon::metrics::Metrics;
use crate::daemon::schemas::SchemaRegistry;
use crate::dispatch::Dispatcher;
use crate::log::EventLog;
use crate::plugins::Loader;

/// What the handlers share.
pub struct ApiState {
    pub log: Arc<dyn EventLog>,
    pub dispatcher: Arc<Dispatcher>,
    pub loader: Arc<Loader>,
    pub schemas: Arc<SchemaRegistry>,
    pub metrics: Arc<Metrics>,
    pub config: ApiConfig,
    /// Turns `true` once shutdown starts; live tails end on it, so the server's
    /// graceful shutdown is not held up by streams that never finish by themselves.
    pub shutdown: watch::Receiver<bool>,
}

/// The v1 routes, with auth, the body limit and JSON answers for unknown routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/events", post(publish::publish_derived))
        .route("/v1/topics", get(topics::list))
        .route(
            "/v1/topics/{topic}/events",
            post(publish::publish_topic).get(topics::read),
        )
        .route(
            "/v1/streams/{stream}/events",
            post(publish::append_stream).get(publish::read_stream),
        )
        .route("/v1/plugins", get(admin::plugins))
        .route("/v1/plugins/{name}/state", get(admin::plugin_state))
        .route("/v1/dlq", get(admin::dlq_list))
        .route("/v1/dlq/replay", post(admin::dlq_replay_many))
        .route(
            "/v1/dlq/{id}",
            get(admin::dlq_show).delete(admin::dlq_delete),
        )
        .route("/v1/dlq/{id}/replay", post(admin::dlq_replay))
        .route("/v1/schemas", get(admin::schema_list))
        .route(
            "/v1/schemas/{type}/{version}",
            put(admin::schema_put).get(admin::schema_get),
        )
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth_and_count,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and
/// waits for requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// Bearer-token check (when a token is configured) and request counting.
async fn auth_and_count(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if let Some(token) = &state.config.token {
        let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let open = req.uri().path() == "/healthz" || ui::is_asset(req.uri().path());
        if !open && (mutating || state.config.protect_reads) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let refusal = match given {
                None => Some("this request needs `Authorization: Bearer <token>`"),
                Some(t) if !constant_time_eq(t.trim().as_bytes(), token.as_bytes()) => {
                    Some("the bearer token is not valid")
                }
                Some(_) => None,
            };
            if let Some(message) = refusal {
                state.metrics.http_request(method.as_str(), 401);
                return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                    .into_response();
            }
        }
    }
    let resp = next.run(req).await;
    state
        .metrics
        .http_request(method.as_str(), resp.status().as_u16());
    resp
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body, or the API's error for a body that is too large or unreadable.
fn body(state: &ApiState, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body exceeds the limit of {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
        }
    })
}

/// Query parameters: only the allowed names, each at most once, values parsed with
/// errors that name the parameter.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> ApiResult<Params> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::bad_request(if allowed.is_empty() {
                    format!("unknown query parameter `{k}`; this request takes none")
                } else {
                    format!(
                        "unknown query parameter `{k}`; this request takes {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(p, _)| p == &k) {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{k}` is given twice"
                )));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params(pairs))
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn get<T: FromStr>(&self, name: &str, expected: &str) -> ApiResult<Option<T>> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter `{name}` must be {expected}, got {v:?}"
                ))
            }),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> ApiResult<bool> {
        match self.str(name) {
            None => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter `{name}` must be true or false, got {v:?}"
            ))),
        }
    }

    /// `limit`, 1 to `max`, default `default`.
    pub(crate) fn limit(&self, default: usize, max: usize) -> ApiResult<usize> {
        let limit = self
            .get::<usize>("limit", &format!("a number from 1 to {max}"))?
            .unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(ApiError::bad_request(format!(
                "query parameter `limit` must be a number from 1 to {max}, got {limit}"
            )));
        }
        Ok(limit)
    }
}

/// Path segments arrive percent-decoded; a segment that does not decode is a 400.
pub(crate) fn path_param<T>(
    p: Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>,
) -> ApiResult<T> {
    p.map(|axum::extract::Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_unknown_and_repeated_names() {
        assert!(Params::parse(Some("from=1&limit=2"), &["from", "limit"]).is_ok());
        assert!(Params::parse(Some("form=1"), &["from"]).is_err());
        assert!(Params::parse(Some("from=1&from=2"), &["from"]).is_err());
        let p = Params::parse(Some("from=x"), &["from"]).unwrap();
        let e = p.get::<u64>("from", "a number").unwrap_err();
        assert!(e.message.contains("from"));
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        assert!(p.limit(10, 100).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
