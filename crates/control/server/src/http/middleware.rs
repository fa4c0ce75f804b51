//! Cross-cutting request handling: request ids, bearer-token authentication, and the audit
//! record of every call that is not a read.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use slipway_api::REQUEST_ID_HEADER;
use slipway_store::NewAudit;

use super::AppState;
use super::error::ApiError;

/// Who made an authenticated call; set on the response by [`authenticate`] for [`audit`].
#[derive(Clone, Debug)]
pub(crate) struct Actor(pub(crate) String);

/// Keeps the caller's `x-request-id` or assigns one, and returns it on the response.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = match req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| v.len() <= 128)
    {
        Some(v) => v.clone(),
        None => {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            let value = HeaderValue::from_str(&hex::encode(bytes)).expect("hex is a valid header");
            req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
            value
        }
    };
    let mut res = next.run(req).await;
    res.headers_mut().insert(REQUEST_ID_HEADER, id);
    res
}

/// Requires `Authorization: Bearer <admin token>`.
pub(crate) async fn authenticate(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    });
    let denied = match token {
        None => Some("missing bearer token"),
        Some(t) if !app.token_matches(t.trim()) => Some("invalid bearer token"),
        Some(_) => None,
    };
    if let Some(reason) = denied {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            reason,
            Some("send `Authorization: Bearer <token>`; the token is in the state directory's `admin.token` (the CLI reads it by itself)"),
        )
        .into_response();
        res.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"slipway\""),
        );
        return res;
    }
    let mut res = next.run(req).await;
    res.extensions_mut().insert(Actor("admin".to_string()));
    res
}

/// Writes an audit record for every call that is not a read, after it ran (so the outcome is
/// known), denied calls included.
pub(crate) async fn audit(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let target = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let res = next.run(req).await;
    let actor = res
        .extensions()
        .get::<Actor>()
        .map_or_else(|| "anonymous".to_string(), |a| a.0.clone());
    let status = res.status();
    let entry = NewAudit {
        actor,
        action: format!("{method} {route}"),
        target,
        outcome: status.as_u16().to_string(),
        details: json!({ "request_id": request_id }),
    };
    if let Err(e) = app.store.append_audit(entry).await {
        // A mutation that cannot be audited is reported as failed, even though it ran.
        tracing::error!(error = %e, "cannot write the audit record");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the call ran but its audit record could not be written",
            Some("check the state store; the event log shows what happened"),
        )
        .into_response();
    }
    res
}
