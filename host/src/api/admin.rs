//! Operating the daemon: plugins, dead letters, schemas, `/metrics`, `/healthz`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::cloudevents::stored_json;
use super::dto::{PluginEntryJson, PluginListJson, ReplayJson, SchemaJson, SchemaListJson};
use super::{ApiError, ApiResult, ApiState, Params, body, path_param};
use crate::daemon::metrics::Snapshot;
use crate::daemon::schemas::{PutOutcome, SchemaError};
use crate::log::{DeadLetter, DeadLetterId};

pub(super) async fn metrics(State(state): State<Arc<ApiState>>) -> ApiResult<Response> {
    let plugins = state.dispatcher.plugins().await;
    let (plugin_loads, plugin_load_failures) = state.loader.load_counts();
    // The log keeps the count: a scrape reads it, never the letters.
    let dead_letters = state.log.dead_letter_counts().await?.values().sum();
    let text = state.metrics.render(Snapshot {
        plugins,
        failed_plugins: state.loader.failures().len(),
        log: state.log.stats(),
        dead_letters,
        plugin_loads,
        plugin_load_failures,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub(super) async fn plugins(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<PluginListJson>> {
    Params::parse(query.as_deref(), &[])?;
    let deployed = state.dispatcher.plugins().await;
    // A failed reload of a file that runs a plugin shows on that plugin's
    // entry; other failures are entries of their own.
    let mut pending = std::collections::BTreeMap::new();
    let mut failed = Vec::new();
    for f in state.loader.failures() {
        match state.loader.running_from(std::path::Path::new(&f.file)) {
            Some(name) => {
                pending.insert(name, f);
            }
            None => failed.push(f),
        }
    }
    let plugins = deployed
        .into_iter()
        .map(|s| {
            let mut json = super::dto::PluginJson::from(s);
            json.pending_error = pending.remove(&json.name).map(Into::into);
            PluginEntryJson::Deployed(Box::new(json))
        })
        .chain(
            failed
                .into_iter()
                .map(|f| PluginEntryJson::Failed(f.into())),
        )
        .collect();
    Ok(Json(PluginListJson { plugins }))
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn dead_letter_json(d: &DeadLetter) -> Value {
    let r = &d.record;
    json!({
        "id": d.id.0,
        "group": d.group,
        "plugin": r.plugin,
        "plugin_version": r.plugin_version,
        "plugin_digest": r.plugin_digest,
        "error_kind": r.kind.as_str(),
        "message": r.message,
        "attempts": r.attempts,
        "first_failure": rfc3339(r.first_failure),
        "last_failure": rfc3339(r.last_failure),
        "event": stored_json(&r.event),
    })
}

fn dead_letter_id(path: Result<Path<String>, PathRejection>) -> ApiResult<DeadLetterId> {
    let raw = path_param(path)?;
    raw.parse::<u64>()
        .map(DeadLetterId)
        .map_err(|_| ApiError::bad_request(format!("a dead letter id is a number, got {raw:?}")))
}

pub(super) async fn dlq_list(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let params = Params::parse(query.as_deref(), &["plugin", "after", "limit"])?;
    let after = params
        .get::<u64>("after", "a dead letter id")?
        .map(DeadLetterId);
    let limit = params.limit(100, 1000)?;
    let list = state
        .log
        .dead_letters(params.str("plugin"), after, limit)
        .await?;
    Ok(Json(json!({
        "dead_letters": list.iter().map(dead_letter_json).collect::<Vec<_>>(),
        "next_after": if list.len() == limit { list.last().map(|d| d.id.0) } else { None },
    })))
}

pub(super) async fn dlq_show(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = dead_letter_id(path)?;
    match state.log.dead_letter(id).await? {
        Some(d) => Ok(Json(dead_letter_json(&d))),
        None => Err(ApiError::not_found(
            "unknown_dead_letter",
            format!("no dead letter with id {id}"),
        )),
    }
}

pub(super) async fn dlq_delete(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = dead_letter_id(path)?;
    if state.log.delete_dead_letter(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_dead_letter",
            format!("no dead letter with id {id}"),
        ))
    }
}

pub(super) async fn dlq_replay(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ReplayJson>> {
    let id = dead_letter_id(path)?;
    let outcome = state.dispatcher.replay(id).await?;
    Ok(Json(ReplayJson::new(id, outcome)))
}

pub(super) async fn dlq_replay_many(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let params = Params::parse(query.as_deref(), &["plugin"])?;
    let plugin = params
        .str("plugin")
        .ok_or_else(|| ApiError::bad_request("replaying many dead letters needs `?plugin=NAME`"))?;
    let (succeeded, failed) = state.dispatcher.replay_all(plugin).await?;
    Ok(Json(
        json!({ "plugin": plugin, "succeeded": succeeded, "failed": failed }),
    ))
}

fn schema_error(e: SchemaError) -> ApiError {
    let message = e.to_string();
    match e {
        SchemaError::InvalidName(_) => ApiError::bad_request(message),
        SchemaError::InvalidSchema(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema", message)
        }
        SchemaError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "schema_exists", message)
        }
        SchemaError::Io { .. }
        | SchemaError::Corrupt { .. }
        | SchemaError::ImportConflict { .. }
        | SchemaError::Log(_) => {
            tracing::error!(error = %message, "schema store failure");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", message)
        }
    }
}

pub(super) async fn schema_put(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (ty, version) = path_param(path)?;
    Params::parse(query.as_deref(), &[])?;
    let body = body(&state, bytes)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON Schema",
        ));
    }
    let schema: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let outcome = state
        .schemas
        .put(&ty, &version, schema)
        .await
        .map_err(schema_error)?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Unchanged => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({ "type": ty, "version": version, "created": outcome == PutOutcome::Created })),
    )
        .into_response())
}

pub(super) async fn schema_list(
    State(state): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<SchemaListJson>> {
    let params = Params::parse(query.as_deref(), &["type"])?;
    let schemas = state
        .schemas
        .list()
        .await
        .map_err(schema_error)?
        .into_iter()
        .filter(|s| params.str("type").is_none_or(|t| t == s.ty))
        .map(SchemaJson::from)
        .collect();
    Ok(Json(SchemaListJson { schemas }))
}

pub(super) async fn schema_get(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<SchemaJson>> {
    let (ty, version) = path_param(path)?;
    state
        .schemas
        .get(&ty, &version)
        .await
        .map_err(schema_error)?
        .map(|s| Json(s.into()))
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_schema",
                format!("no schema for type {ty} version {version}"),
            )
        })
}

/// `GET /v1/plugins/{name}/state?prefix=&limit=`: a plugin's committed
/// key-value state, for operators (what a saga knows about an order, a
/// counter's value). Values that are JSON are shown as JSON, other UTF-8 as
/// `{"text": ...}`, anything else as `{"base64": ...}`.
pub(super) async fn plugin_state(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let name = path_param(path)?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(ApiError::bad_request(format!(
            "a plugin name is 1 to 64 lowercase letters, digits or '-', got {name:?}"
        )));
    }
    let params = Params::parse(query.as_deref(), &["prefix", "limit"])?;
    let prefix = params.str("prefix").unwrap_or("");
    let limit = params.limit(100, 1000)?;
    let mut keys = state.log.state_keys(&name, prefix, limit + 1).await?;
    let truncated = keys.len() > limit;
    keys.truncate(limit);
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        // A key deleted between listing and reading is simply left out.
        let Some(bytes) = state.log.state_get(&name, &key).await? else {
            continue;
        };
        let value = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => v,
            Err(_) => match String::from_utf8(bytes) {
                Ok(text) => json!({ "text": text }),
                Err(e) => {
                    use base64::Engine as _;
                    json!({ "base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes()) })
                }
            },
        };
        entries.push(json!({ "key": key, "value": value }));
    }
    Ok(Json(
        json!({ "plugin": name, "entries": entries, "truncated": truncated }),
    ))
}
