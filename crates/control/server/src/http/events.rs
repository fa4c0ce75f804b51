//! The event log over HTTP: a list, and a server-sent-events stream that never skips an event.
//!
//! The stream subscribes to new events *before* reading the backlog, then drops anything it
//! has already sent by id, so nothing appended between the two is lost; a subscriber that falls
//! behind reads the gap from the store. Streams end when the daemon shuts down, so they never
//! hold up a graceful stop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use slipway_api::{Event, EventsQuery};
use slipway_store::{EventQuery, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::handlers::ApiQuery;

/// The newest events, oldest first.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(EventsQuery),
    responses((status = 200, body = Vec<Event>)),
    security(("bearer" = [])),
)]
pub(crate) async fn list_events(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let environment = match &query.env {
        Some(e) => Some(super::known_environment(&app, e).await?),
        None => None,
    };
    let events = app
        .store
        .events(&EventQuery {
            after: query.after,
            environment,
            limit: Some(query.limit.unwrap_or(100).min(10_000)),
            newest: query.after.is_none(),
            ..Default::default()
        })
        .await?;
    Ok(Json(events))
}

/// Follows the event log as server-sent events (`id` is the event id, `data` the event as JSON).
/// Without `after` or `Last-Event-ID` it starts with the next new event.
#[utoipa::path(
    get, path = "/v1/events/stream", tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "A `text/event-stream` of events", content_type = "text/event-stream", body = Event)),
    security(("bearer" = [])),
)]
pub(crate) async fn stream_events(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(e) = &query.env {
        super::known_environment(&app, e).await?;
    }
    let rx = app.store.subscribe_events();
    let after = match last_event_id.or(query.after) {
        Some(id) => id,
        // Start from now: the newest existing id.
        None => app
            .store
            .events(&EventQuery {
                limit: Some(1),
                newest: true,
                ..Default::default()
            })
            .await?
            .last()
            .map_or(0, |e| e.id),
    };
    let cursor = Cursor {
        store: app.store.clone(),
        rx,
        backlog: VecDeque::new(),
        last: after,
        environment: query.env,
        shutdown: app.shutdown.clone(),
        needs_backlog: true,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        let event = cursor.next().await?;
        let sse = SseEvent::default()
            .id(event.id.to_string())
            .event(event.kind.clone())
            .data(serde_json::to_string(&event).expect("events serialize"));
        Some((Ok(sse), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Cursor {
    store: Arc<dyn Store>,
    rx: tokio::sync::broadcast::Receiver<Event>,
    backlog: VecDeque<Event>,
    last: i64,
    environment: Option<String>,
    shutdown: CancellationToken,
    needs_backlog: bool,
}

impl Cursor {
    async fn refill(&mut self) {
        let query = EventQuery {
            after: Some(self.last),
            environment: self.environment.clone(),
            ..Default::default()
        };
        match self.store.events(&query).await {
            Ok(events) => self.backlog.extend(events),
            Err(e) => tracing::warn!(error = %e, "cannot read the event backlog"),
        }
        self.needs_backlog = false;
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.needs_backlog {
                self.refill().await;
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.id > self.last {
                    self.last = event.id;
                    return Some(event);
                }
                continue;
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.shutdown.cancelled() => return None,
            };
            match received {
                Ok(event) if event.id <= self.last => {}
                Ok(event) => {
                    let wanted = self
                        .environment
                        .as_ref()
                        .is_none_or(|e| event.environment.as_ref() == Some(e));
                    if wanted {
                        self.last = event.id;
                        return Some(event);
                    }
                }
                Err(RecvError::Lagged(_)) => self.needs_backlog = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
