//! Handlers of the alert routes: what fires (with the rules, the deliveries and the
//! silences), the history, acknowledgements and silences. Mutations are audited by the
//! middleware.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_alerts::notify::{Notification, Status};
use slipway_alerts::route::{Matcher, Silence};
use slipway_alerts::state::Phase;
use slipway_api::{
    AckBody, AlertHistoryParams, AlertHistoryView, AlertRuleView, AlertView, AlertsView,
    DeliveryView, ErrorBody, FailingChannelView, SilenceBody, SilenceView, TestBody,
};

use super::AppState;
use super::error::ApiError;
use super::handlers::{ApiJson, ApiQuery};
use super::middleware::{AuditNote, AuditNotes};

const ACTOR: &str = "admin";

fn time(ms: i64) -> String {
    slipway_alerts::notify::rfc3339(Some(ms))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn matchers(texts: &[String]) -> Result<Vec<Matcher>, ApiError> {
    if texts.is_empty() {
        return Err(ApiError::bad_request(
            "no matchers",
            "give at least one, e.g. `service=web` or `alertname=~\"api_.*\"`",
        ));
    }
    texts
        .iter()
        .map(|t| {
            Matcher::parse(t).map_err(|e| {
                ApiError::bad_request(
                    e,
                    "write `name=value`, `name!=value`, `name=~regex` or `name!~regex`",
                )
            })
        })
        .collect()
}

fn silence_view(s: &Silence) -> SilenceView {
    SilenceView {
        id: s.id.clone(),
        matchers: s.matchers.iter().map(Matcher::to_string).collect(),
        starts_at: time(s.starts_at),
        ends_at: time(s.ends_at),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    }
}

/// What fires and waits, every rule, the newest deliveries and the active silences.
#[utoipa::path(
    get, path = "/v1/alerts", tag = "alerts",
    responses((status = 200, body = AlertsView)),
    security(("bearer" = [])),
)]
pub(crate) async fn list(State(app): State<Arc<AppState>>) -> Result<Json<AlertsView>, ApiError> {
    let engine = app.alerts.engine.lock().await;
    let saved = engine.saved();
    let acked: Vec<(String, Option<String>)> = saved
        .router
        .groups()
        .into_iter()
        .map(|(k, _, _, by)| (k, by))
        .collect();
    let mut alerts = Vec::new();
    for rule in engine.rules() {
        let Some(state) = saved.rules.get(&rule.name) else {
            continue;
        };
        for a in state.alerts.values() {
            let labels: std::collections::BTreeMap<String, String> =
                a.labels.iter().cloned().collect();
            let acknowledged_by = acked
                .iter()
                .find(|(k, _)| k.contains(&format!("alertname={:?}", rule.name)))
                .and_then(|(_, by)| by.clone());
            alerts.push(AlertView {
                rule: rule.name.clone(),
                state: match a.phase {
                    Phase::Pending => "pending".into(),
                    Phase::Firing => "firing".into(),
                },
                severity: rule.severity.as_str().into(),
                labels,
                value: a.value.is_finite().then_some(a.value),
                since: time(a.active_at),
                fired_at: a.fired_at.map(time),
                holding: a.holding_since.is_some(),
                acknowledged_by,
            });
        }
    }
    alerts.sort_by(|a, b| {
        (a.state != "firing", &a.severity, &a.rule).cmp(&(
            b.state != "firing",
            &b.severity,
            &b.rule,
        ))
    });
    let health = engine.health();
    let rules = engine
        .rules()
        .iter()
        .map(|r| AlertRuleView {
            name: r.name.clone(),
            severity: r.severity.as_str().into(),
            expr: r.expr.clone(),
            for_seconds: r.for_.as_secs_f64(),
            channels: r.channels.clone(),
            source: r.source.clone(),
            evaluated_at: health.get(&r.name).map(|h| time(h.evaluated_ms)),
            error: health.get(&r.name).and_then(|h| h.error.clone()),
        })
        .collect();
    let silences = engine.silences(now_ms()).iter().map(silence_view).collect();
    drop(engine);
    let deliveries = app
        .store
        .outbox(20)
        .await?
        .into_iter()
        .map(|e| {
            let n: Option<Notification> = serde_json::from_str(&e.payload).ok();
            DeliveryView {
                key: e.key,
                channel: e.channel,
                status: n
                    .as_ref()
                    .map_or("firing", |n| {
                        if n.status == Status::Firing {
                            "firing"
                        } else {
                            "resolved"
                        }
                    })
                    .into(),
                reason: n.map(|n| n.reason).unwrap_or_default(),
                created: time(e.created_ms),
                sent: e.sent_ms.map(time),
                attempts: e.attempts,
                last_error: e.last_error,
            }
        })
        .collect();
    let problems = app
        .alerts
        .problems
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let failing_channels = app
        .alerts
        .health
        .lock()
        .map(|h| {
            h.failing
                .iter()
                .map(|(c, (since, error))| FailingChannelView {
                    channel: c.clone(),
                    since: time(*since),
                    error: error.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(AlertsView {
        alerts,
        rules,
        deliveries,
        silences,
        problems,
        failing_channels,
    }))
}

/// What alerts did, newest first.
#[utoipa::path(
    get, path = "/v1/alerts/history", tag = "alerts",
    params(AlertHistoryParams),
    responses((status = 200, body = Vec<AlertHistoryView>)),
    security(("bearer" = [])),
)]
pub(crate) async fn history(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<AlertHistoryParams>,
) -> Result<Json<Vec<AlertHistoryView>>, ApiError> {
    let rows = app
        .store
        .alert_history(&slipway_store::AlertHistoryQuery {
            rule: q.rule,
            limit: q.limit.unwrap_or(50).min(10_000),
            ..Default::default()
        })
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AlertHistoryView {
                time: time(r.event.time_ms),
                rule: r.event.rule,
                status: r.event.status,
                severity: r.event.severity,
                labels: r.event.labels,
                value: r.event.value,
                actor: r.event.actor,
            })
            .collect(),
    ))
}

/// Acknowledges the firing groups with an alert matching every matcher: they stop repeating
/// until they resolve.
#[utoipa::path(
    post, path = "/v1/alerts/ack", tag = "alerts",
    request_body = AckBody,
    responses(
        (status = 200, description = "How many groups were acknowledged"),
        (status = 400, description = "A bad matcher", body = ErrorBody),
        (status = 404, description = "Nothing firing matches", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn ack(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Response, ApiError> {
    let ms = matchers(&body.matchers)?;
    let n = app
        .alerts
        .engine
        .lock()
        .await
        .ack(&ms, ACTOR, now_ms())
        .await?;
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no firing alert matches {}", body.matchers.join(", ")),
            Some("`slipway alerts` lists what fires"),
        ));
    }
    let note = AuditNote {
        action: Some("alert.ack"),
        target: Some(body.matchers.join(", ")),
        outcome: Some("succeeded"),
        ..Default::default()
    };
    Ok((
        AuditNotes::one(note),
        Json(serde_json::json!({ "acknowledged": n })),
    )
        .into_response())
}

/// Sends a test notification to a channel at once (not through the outbox), to check its
/// endpoint and secret.
#[utoipa::path(
    post, path = "/v1/alerts/test", tag = "alerts",
    request_body = TestBody,
    responses(
        (status = 200, description = "Delivered"),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 502, description = "The channel refused it or did not answer", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn test_channel(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Response, ApiError> {
    let senders = app.alerts.engine.lock().await.senders();
    let Some(notifier) = senders.get(&body.channel) else {
        let mut known: Vec<&String> = senders.keys().collect();
        known.sort();
        let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no channel `{}`", body.channel),
            Some(&if known.is_empty() {
                "declare one under [channels.NAME] in slipway.toml".to_string()
            } else {
                format!("the channels are {}", known.join(", "))
            }),
        ));
    };
    let now = now_ms();
    let labels = vec![
        ("alertname".to_string(), "SlipwayTest".to_string()),
        ("severity".to_string(), "P4".to_string()),
    ];
    let n = Notification {
        id: format!("test-{now}"),
        group_key: "{}:{alertname=\"SlipwayTest\"}".into(),
        receiver: body.channel.clone(),
        status: Status::Firing,
        group_labels: vec![labels[0].clone()],
        common_labels: labels.clone(),
        common_annotations: vec![],
        alerts: vec![slipway_alerts::notify::AlertItem {
            status: Status::Firing,
            labels,
            annotations: vec![(
                "summary".into(),
                "a test notification from `slipway alerts test`".into(),
            )],
            starts_at: now,
            ends_at: None,
            generator_url: String::new(),
        }],
        external_url: format!("http://{}", app.control.listen),
        reason: "test".into(),
        acknowledged_by: None,
    };
    let note = |outcome: &'static str| AuditNote {
        action: Some("alert.test"),
        target: Some(body.channel.clone()),
        outcome: Some(outcome),
        ..Default::default()
    };
    match notifier.send(&n).await {
        Ok(()) => Ok((
            AuditNotes::one(note("succeeded")),
            Json(serde_json::json!({ "channel": body.channel, "delivered": true })),
        )
            .into_response()),
        Err(e) => {
            let mut res = ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("channel `{}`: {}", body.channel, e.message),
                Some("check its URL and secret; `slipway alerts` lists what failed"),
            )
            .into_response();
            res.extensions_mut()
                .insert(AuditNotes(vec![note("failed")]));
            Ok(res)
        }
    }
}

/// Adds a silence: alerts matching every matcher are not notified until it ends.
#[utoipa::path(
    post, path = "/v1/silences", tag = "alerts",
    request_body = SilenceBody,
    responses(
        (status = 201, body = SilenceView),
        (status = 400, description = "A bad matcher or duration", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn add_silence(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<SilenceBody>,
) -> Result<Response, ApiError> {
    let ms = matchers(&body.matchers)?;
    let duration: slipway_spec::units::Duration = body.duration.parse().map_err(|e| {
        ApiError::bad_request(
            format!("`{}` is not a duration: {e}", body.duration),
            "for example `30m`, `2h` or `1d`",
        )
    })?;
    if body.comment.trim().is_empty() {
        return Err(ApiError::bad_request(
            "a silence needs a comment",
            "say why, e.g. `--comment \"database migration\"`",
        ));
    }
    let now = now_ms();
    let start = match &body.starts_at {
        None => now,
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|e| {
                ApiError::bad_request(
                    format!("`{t}` is not a time: {e}"),
                    "write it as RFC 3339, e.g. `2026-12-24T22:00:00Z`",
                )
            })?
            .as_millisecond()
            .max(now),
    };
    let s = Silence {
        id: format!("s{}", hex::encode(getrandom_bytes())),
        matchers: ms,
        starts_at: start,
        ends_at: start + i64::try_from(duration.std().as_millis()).unwrap_or(i64::MAX / 2),
        created_by: ACTOR.into(),
        comment: body.comment.trim().to_string(),
    };
    let view = silence_view(&s);
    app.alerts.engine.lock().await.silence(s).await?;
    let note = AuditNote {
        action: Some("silence.add"),
        target: Some(format!(
            "{} until {}",
            view.matchers.join(", "),
            view.ends_at
        )),
        subject: Some(view.id.clone()),
        outcome: Some("succeeded"),
        reason: Some(view.comment.clone()),
        ..Default::default()
    };
    Ok((StatusCode::CREATED, AuditNotes::one(note), Json(view)).into_response())
}

fn getrandom_bytes() -> [u8; 4] {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b
}

/// The active silences.
#[utoipa::path(
    get, path = "/v1/silences", tag = "alerts",
    responses((status = 200, body = Vec<SilenceView>)),
    security(("bearer" = [])),
)]
pub(crate) async fn list_silences(State(app): State<Arc<AppState>>) -> Json<Vec<SilenceView>> {
    let engine = app.alerts.engine.lock().await;
    let now = now_ms();
    Json(engine.silences(now).iter().map(silence_view).collect())
}

/// Ends a silence now.
#[utoipa::path(
    delete, path = "/v1/silences/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Silence id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "No such active silence", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn expire_silence(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let found = app
        .alerts
        .engine
        .lock()
        .await
        .expire_silence(&id, now_ms())
        .await?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active silence `{id}`"),
            Some("`slipway silence list` shows them"),
        ));
    }
    let note = AuditNote {
        action: Some("silence.expire"),
        target: Some(id.clone()),
        subject: Some(id),
        outcome: Some("succeeded"),
        ..Default::default()
    };
    Ok((StatusCode::NO_CONTENT, AuditNotes::one(note)).into_response())
}
