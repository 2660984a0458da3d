//! The admin API: publish, list, describe and retire plugins over HTTP. Every route needs
//! `Authorization: Bearer <admin token>`, or a credential whose policy grants the route's admin
//! scope (`publish`, `retire`, `read`; docs/security.md); it is checked before the body is read,
//! so an unauthenticated upload stores nothing and costs nothing.
//!
//! | method | path | does |
//! |---|---|---|
//! | `POST` | `/admin/plugins` | publish the component in the body (`x-mpreg-sandbox`: JSON sandbox) |
//! | `GET` | `/admin/plugins` | list every version |
//! | `GET` | `/admin/plugins/{name}` | describe the newest loaded version |
//! | `GET` | `/admin/plugins/{name}/{version}` | describe one version |
//! | `DELETE` | `/admin/plugins/{name}/{version}` | retire it (drains running calls first) |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::state::ServerState;
use crate::auth::policy::AdminScope;
use crate::cluster::Part;
use crate::plugin::PublishError;
use crate::protocol::admin::{
    AdminErrorBody, AdminErrorReply, PLACEMENT_HEADER, PublishOutcome, SANDBOX_HEADER,
};
use crate::sandbox::Sandbox;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = AdminErrorReply {
        error: AdminErrorBody {
            kind: kind.to_owned(),
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

fn publish_error(e: PublishError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.kind(), e.to_string())
}

/// The refusal, unless the request may use the admin `scope` (docs/security.md).
fn refusal(state: &ServerState, headers: &HeaderMap, scope: AdminScope) -> Option<Response> {
    state
        .guard
        .admin(headers, None, scope)
        .err()
        .map(|r| error(r.status, r.kind, r.message))
}

/// `POST /admin/plugins`.
pub async fn publish(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(r) = refusal(&state, &parts.headers, AdminScope::Publish) {
        return r;
    }
    let limit = state.max_upload_bytes;
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "upload larger than {} MiB (admin.max_upload_mib); nothing was stored",
                limit >> 20
            ),
        )
    };
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        // Read and discard a moderately oversized body so the client, still sending, gets the
        // reason instead of a broken pipe; far larger ones are cut off.
        if len <= limit.saturating_mul(8) {
            let mut stream = Body::new(body).into_data_stream();
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut stream).await {}
        }
        return too_big();
    }
    let sandbox = match parts.headers.get(SANDBOX_HEADER) {
        None => None,
        Some(v) => match v
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Sandbox>(t).map_err(|e| e.to_string()))
        {
            Ok(s) => Some(s),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_sandbox",
                    format!("{SANDBOX_HEADER} is not a valid sandbox: {e}"),
                );
            }
        },
    };
    let placement = parts
        .headers
        .get(PLACEMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(crate::config::split_list);
    let bytes = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(b) => b,
        Err(_) => return too_big(),
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "not_a_component",
            "empty upload: send the component's bytes as the request body",
        );
    }
    let options = crate::plugin::PublishOptions {
        sandbox,
        placement,
        changed_at: None,
    };
    match state.manager.publish_with(bytes, options).await {
        Ok(p) => {
            let status = if p.outcome == PublishOutcome::Published {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            // Answer once the live peers can route calls of the new version here.
            if let Some(cluster) = state.dispatcher.cluster() {
                cluster.settle(Part::Plugins).await;
            }
            (status, Json(p)).into_response()
        }
        Err(e) => publish_error(e),
    }
}

/// `GET /admin/plugins`.
pub async fn list(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&state, &headers, AdminScope::Read) {
        return r;
    }
    match state.manager.list() {
        Ok(list) => Json(list).into_response(),
        Err(e) => publish_error(e.into()),
    }
}

/// `GET /admin/plugins/{name}` (the newest loaded version) and
/// `GET /admin/plugins/{name}/{version}`.
pub async fn describe(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    if let Some(r) = refusal(&state, &headers, AdminScope::Read) {
        return r;
    }
    let name = params.get("name").map_or("", String::as_str);
    reply(
        state
            .manager
            .describe(name, params.get("version").map(String::as_str)),
    )
}

/// `DELETE /admin/plugins/{name}/{version}`.
pub async fn retire(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&state, &headers, AdminScope::Retire) {
        return r;
    }
    match state.manager.retire(&name, &version).await {
        Ok(r) => {
            // Answer once the live peers route no new call to the version (docs/cluster.md).
            if let Some(cluster) = state.dispatcher.cluster() {
                cluster.settle(Part::Plugins).await;
            }
            Json(r).into_response()
        }
        Err(e) => publish_error(e),
    }
}

fn reply(result: Result<Value, PublishError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => publish_error(e),
    }
}
