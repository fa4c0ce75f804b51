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
    let bearer = header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(|t| t.trim().to_string())
    });
    // Basic authentication with the token as the password (any user name) serves the tools
    // that cannot send a bearer token: `promtool query` reads it from the URL
    // (`http://slipway:TOKEN@127.0.0.1:7070`), Grafana's data sources offer it.
    let token = bearer.or_else(|| header.and_then(basic_password));
    let denied = match token {
        None => Some("missing bearer token"),
        Some(t) if !app.token_matches(&t) => Some("invalid bearer token"),
        Some(_) => None,
    };
    if let Some(reason) = denied {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            reason,
            Some("send `Authorization: Bearer <token>` (or Basic with the token as password); the token is in the state directory's `admin.token` (the CLI reads it by itself)"),
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

/// The password of `Basic base64(user:password)`.
fn basic_password(header: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// What a handler adds to the audit record of its call, as a response extension: the
/// semantic action when the route alone does not say it (a freeze or an unfreeze), what it is
/// about, and the `subject` (`deployment-20`) when the call starts work that ends later — the
/// record is then `started` until that work's end writes its outcome. Several notes make
/// several records (`up` applies the file and starts a deploy).
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditNote {
    pub(crate) action: Option<&'static str>,
    pub(crate) environment: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) subject: Option<String>,
    /// How it ended, when the call's status does not say it for this note.
    pub(crate) outcome: Option<&'static str>,
    pub(crate) details: serde_json::Value,
}

impl AuditNote {
    pub(crate) fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The notes of one call.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditNotes(pub(crate) Vec<AuditNote>);

impl AuditNotes {
    pub(crate) fn one(note: AuditNote) -> axum::Extension<Self> {
        axum::Extension(AuditNotes(vec![note]))
    }
}

/// The action a mutating route performs, for routes whose name says it.
fn action_of(route: &str) -> Option<&'static str> {
    Some(match route {
        "/v1/environments/{env}/apply" => "config.apply",
        "/v1/environments/{env}/deploy" => "deploy.start",
        "/v1/environments/{env}/rollback" => "deploy.rollback",
        "/v1/environments/{env}/promote" => "deploy.promote",
        "/v1/environments/{env}/pause" => "deploy.pause",
        "/v1/environments/{env}/resume" => "deploy.resume",
        "/v1/environments/{env}/abort" => "deploy.abort",
        "/v1/environments/{env}/releases/{release}/pin" => "release.pin",
        "/v1/environments/{env}/freeze" => "environment.freeze",
        "/v1/environments/{env}/unfreeze" => "environment.unfreeze",
        "/v1/environments/{env}/runs" => "pipeline.run",
        "/v1/runs/{id}/approve" => "pipeline.approve",
        "/v1/runs/{id}/cancel" => "pipeline.cancel",
        "/v1/runs/{id}/rerun" => "pipeline.rerun",
        "/v1/services/{service}/runs" => "cron.run",
        "/v1/annotations" => "annotation.add",
        "/v1/alerts/ack" => "alert.ack",
        "/v1/alerts/test" => "alert.test",
        "/v1/silences" => "silence.add",
        "/v1/silences/{id}" => "silence.expire",
        "/v1/shutdown" => "daemon.stop",
        _ => return None,
    })
}

/// Work can end before its audit record is written (a deploy that fails at once): then the
/// record gets the outcome now, since the end found nothing to complete.
pub(crate) async fn settle(store: &dyn slipway_store::Store, subject: &str) {
    let ended = if let Some(id) = subject
        .strip_prefix("deployment-")
        .and_then(|i| i.parse().ok())
    {
        store
            .deployment(id)
            .await
            .ok()
            .flatten()
            .filter(|d| !d.active)
            .map(|d| d.status)
    } else if let Some(id) = subject.strip_prefix("run-").and_then(|i| i.parse().ok()) {
        store
            .run(id)
            .await
            .ok()
            .flatten()
            .filter(|r| slipway_pipeline::state::status::is_final(&r.status))
            .map(|r| r.status)
    } else {
        None
    };
    if let Some(outcome) = ended {
        let _ = store.complete_audit(subject, &outcome).await;
    }
}

/// The value of `{name}` in `path` for a route template.
fn path_param(route: &str, path: &str, name: &str) -> Option<String> {
    let want = format!("{{{name}}}");
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == want)
        .map(|(_, p)| p.to_string())
}

/// Largest request body the audit reads a `reason` from (bodies are small JSON).
const AUDITED_BODY: usize = 1 << 20;

/// Writes an audit record for every call that is not a read, after it ran (so the outcome is
/// known), denied calls included: who, which action on which environment and target, the
/// reason given in the body, the request id, and how it ended (`succeeded`, `refused`,
/// `denied`, `failed`, or `started` for work that ends later and completes the record then).
pub(crate) async fn audit(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Prometheus' query API takes reads as POSTs too (long queries): they change nothing.
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path().starts_with("/api/v1/")
    {
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
    // The reason a caller gives is part of the record, whether the call is allowed or not.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, AUDITED_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
                Some("send at most 1 MiB"),
            )
            .into_response();
        }
    };
    let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string));
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let res = next.run(req).await;
    let actor = res
        .extensions()
        .get::<Actor>()
        .map_or_else(|| "anonymous".to_string(), |a| a.0.clone());
    let status = res.status();
    let outcome = if status.is_success() {
        "succeeded"
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        "denied"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    };
    let environment = path_param(&route, &target, "env")
        .filter(|e| e != "-")
        .or_else(|| {
            app.project
                .read()
                .ok()
                .and_then(|p| p.as_ref().map(slipway_spec::Project::default_environment))
                .filter(|_| route.contains("{env}"))
        });
    let notes = res
        .extensions()
        .get::<AuditNotes>()
        .map(|n| n.0.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| vec![AuditNote::default()]);
    for note in notes {
        let entry = NewAudit {
            actor: actor.clone(),
            action: note
                .action
                .or_else(|| action_of(&route))
                .map_or_else(|| format!("{method} {route}"), str::to_string),
            environment: note.environment.or_else(|| environment.clone()),
            target: note.target.unwrap_or_else(|| match &environment {
                Some(env) if route.ends_with("{env}/deploy") || route.ends_with("{env}/apply") => {
                    format!("environment {env}")
                }
                _ => target.clone(),
            }),
            reason: note.reason.or_else(|| reason.clone()),
            request_id: Some(request_id.clone()).filter(|r| !r.is_empty()),
            outcome: match note.outcome {
                Some(o) => o.to_string(),
                None if note.subject.is_some() && status.is_success() => "started".to_string(),
                None => outcome.to_string(),
            },
            subject: note.subject,
            details: if note.details.is_null() {
                json!({ "status": status.as_u16() })
            } else {
                let mut d = note.details;
                if let Some(o) = d.as_object_mut() {
                    o.insert("status".into(), status.as_u16().into());
                }
                d
            },
        };
        let subject = entry.subject.clone().filter(|_| entry.outcome == "started");
        let appended = app.store.append_audit(entry).await;
        if appended.is_ok()
            && let Some(subject) = subject
        {
            settle(app.store.as_ref(), &subject).await;
        }
        if let Err(e) = appended {
            // A mutation that cannot be audited is reported as failed, even though it ran.
            tracing::error!(error = %e, "cannot write the audit record");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the call ran but its audit record could not be written",
                Some("check the state store; the event log shows what happened"),
            )
            .into_response();
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_come_from_the_route_template() {
        assert_eq!(
            path_param(
                "/v1/environments/{env}/freeze",
                "/v1/environments/production/freeze",
                "env"
            )
            .as_deref(),
            Some("production")
        );
        assert_eq!(
            path_param("/v1/runs/{id}/approve", "/v1/runs/3/approve", "env"),
            None
        );
        assert_eq!(
            action_of("/v1/environments/{env}/abort"),
            Some("deploy.abort")
        );
    }
}
