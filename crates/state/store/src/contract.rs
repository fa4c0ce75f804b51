//! The contract every [`Store`] implementation passes, as plain async functions plus a macro
//! that turns them into tests for one implementation:
//!
//! ```ignore
//! async fn store() -> (Box<dyn Store>, impl Sized) { /* a fresh, empty store */ }
//! slipway_store::store_contract_tests!(store);
//! ```
//!
//! Each case gets a fresh, empty store. The second value the factory returns is kept alive for
//! the test (a temporary directory, a database server guard).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::{
    AlertHistoryQuery, AuditQuery, DeploymentUpdate, EnvironmentState, EventLevel, EventQuery,
    IncidentQuery, IncidentRecord, NewAction, NewAlertEvent, NewAudit, NewDeployment, NewEvent,
    NewIncidentEntry, NewNotification, NewRelease, NewRun, RunQuery, RunUpdate, Store, StoreError,
};

/// Generates one test per contract case for a store factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@cases $factory;
            events_read_back_in_order,
            events_after_limit_and_newest,
            events_filter_by_environment,
            subscribers_see_appended_events,
            audit_reads_back_the_newest,
            audit_filters_by_environment_and_action_and_completes_once,
            live_environments_are_those_with_a_release_or_a_deployment,
            applied_configs_count_generations,
            meta_round_trips,
            schema_version_is_current,
            concurrent_appends_all_land,
            releases_number_per_environment_and_keep_their_flags,
            one_active_deployment_per_environment,
            a_deployment_update_moves_the_environment_in_the_same_write,
            environment_state_defaults_and_round_trips,
            runs_round_trip_and_filter_by_environment_commit_and_status,
            alerting_commits_state_history_and_notifications_at_once,
            the_outbox_keeps_each_channels_order_through_retries,
            alert_history_is_followed_from_a_cursor_or_a_time,
            an_alert_opens_one_incident_whose_log_keeps_every_change,
            action_items_stay_open_until_done
        );
    };
    (@cases $factory:path; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $factory().await;
                $crate::contract::$case(std::sync::Arc::from(store)).await;
            }
        )*
    };
}

fn event(kind: &str, n: i64) -> NewEvent {
    NewEvent::info(kind, format!("event {n}")).data(json!({ "n": n, "nested": { "ok": true } }))
}

/// Appended events come back in order with every field intact.
pub async fn events_read_back_in_order(store: Arc<dyn Store>) {
    let first = store
        .append_event(
            event("test.first", 1)
                .level(EventLevel::Warning)
                .environment("staging")
                .subject("web"),
        )
        .await
        .unwrap();
    let second = store.append_event(event("test.second", 2)).await.unwrap();
    assert!(second.id > first.id, "ids increase");
    assert!(second.time >= first.time, "time does not go back");
    let all = store.events(&EventQuery::default()).await.unwrap();
    assert_eq!(all, vec![first.clone(), second]);
    assert_eq!(all[0].level, EventLevel::Warning);
    assert_eq!(all[0].environment.as_deref(), Some("staging"));
    assert_eq!(all[0].subject.as_deref(), Some("web"));
    assert_eq!(all[0].data["nested"]["ok"], true);
}

/// `after`, `limit` and `newest` select the right window.
pub async fn events_after_limit_and_newest(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(store.append_event(event("test.n", n)).await.unwrap().id);
    }
    let after = store
        .events(&EventQuery {
            after: Some(ids[6]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[7..].to_vec()
    );
    let oldest = store
        .events(&EventQuery {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        oldest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    let newest = store
        .events(&EventQuery {
            limit: Some(3),
            newest: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[7..].to_vec()
    );
}

/// An environment filter returns only that environment's events.
pub async fn events_filter_by_environment(store: Arc<dyn Store>) {
    store
        .append_event(event("a", 1).environment("staging"))
        .await
        .unwrap();
    store
        .append_event(event("b", 2).environment("production"))
        .await
        .unwrap();
    store.append_event(event("c", 3)).await.unwrap();
    let staging = store
        .events(&EventQuery {
            environment: Some("staging".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(staging.len(), 1);
    assert_eq!(staging[0].kind, "a");
}

/// A subscriber receives events appended after it subscribed, in order.
pub async fn subscribers_see_appended_events(store: Arc<dyn Store>) {
    store.append_event(event("before", 0)).await.unwrap();
    let mut rx = store.subscribe_events();
    let a = store.append_event(event("after", 1)).await.unwrap();
    let b = store.append_event(event("after", 2)).await.unwrap();
    let deadline = std::time::Duration::from_secs(5);
    let got_a = tokio::time::timeout(deadline, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let got_b = tokio::time::timeout(deadline, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got_a, got_b), (a, b));
}

/// The audit log keeps every field and reads back the newest records, oldest first.
pub async fn audit_reads_back_the_newest(store: Arc<dyn Store>) {
    for n in 0..5 {
        store
            .append_audit(NewAudit {
                actor: "admin".into(),
                action: "annotation.add".into(),
                target: format!("/v1/annotations/{n}"),
                outcome: "succeeded".into(),
                details: json!({ "n": n }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let last = store
        .audit(&AuditQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0].details["n"], 3);
    assert_eq!(last[1].details["n"], 4);
    assert_eq!(last[1].actor, "admin");
    assert_eq!(last[1].action, "annotation.add");
    assert_eq!(last[1].outcome, "succeeded");
    assert!(last[1].id > last[0].id);
}

/// Audit records filter by environment and by action (a name, or a `prefix*`), keep what
/// they were given, and take a final outcome once.
pub async fn audit_filters_by_environment_and_action_and_completes_once(store: Arc<dyn Store>) {
    let row = |action: &str, env: Option<&str>, subject: Option<&str>, outcome: &str| NewAudit {
        actor: "admin".into(),
        action: action.into(),
        environment: env.map(str::to_string),
        target: "t".into(),
        reason: Some(format!("why {action}")),
        request_id: Some("req-1".into()),
        subject: subject.map(str::to_string),
        outcome: outcome.into(),
        details: json!({}),
    };
    store
        .append_audit(row(
            "environment.freeze",
            Some("production"),
            None,
            "succeeded",
        ))
        .await
        .unwrap();
    store
        .append_audit(row(
            "deploy.start",
            Some("production"),
            Some("deployment-7"),
            "started",
        ))
        .await
        .unwrap();
    store
        .append_audit(row(
            "deploy.start",
            Some("staging"),
            Some("deployment-8"),
            "started",
        ))
        .await
        .unwrap();
    store
        .append_audit(row("deployment_x", Some("production"), None, "succeeded"))
        .await
        .unwrap();
    let query = |env: Option<&str>, action: Option<&str>| AuditQuery {
        limit: 100,
        environment: env.map(str::to_string),
        action: action.map(str::to_string),
    };
    let prod = store.audit(&query(Some("production"), None)).await.unwrap();
    assert_eq!(prod.len(), 3);
    let deploys = store
        .audit(&query(Some("production"), Some("deploy.*")))
        .await
        .unwrap();
    assert_eq!(
        deploys.len(),
        1,
        "`_` in a name is not a wildcard: {deploys:?}"
    );
    assert_eq!(deploys[0].reason.as_deref(), Some("why deploy.start"));
    assert_eq!(deploys[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(deploys[0].outcome, "started");
    assert!(deploys[0].completed.is_none());
    let exact = store
        .audit(&query(None, Some("environment.freeze")))
        .await
        .unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(
        store
            .complete_audit("deployment-7", "rolled_back")
            .await
            .unwrap(),
        1
    );
    // Once only.
    assert_eq!(
        store
            .complete_audit("deployment-7", "succeeded")
            .await
            .unwrap(),
        0
    );
    let done = store
        .audit(&query(Some("production"), Some("deploy.*")))
        .await
        .unwrap();
    assert_eq!(done[0].outcome, "rolled_back");
    assert!(done[0].completed.is_some());
    let other = store
        .audit(&query(Some("staging"), Some("deploy.start")))
        .await
        .unwrap();
    assert_eq!(other[0].outcome, "started", "another subject is untouched");
}

/// Environments with a current release or a deployment going are live; others are not.
pub async fn live_environments_are_those_with_a_release_or_a_deployment(store: Arc<dyn Store>) {
    assert!(store.live_environments().await.unwrap().is_empty());
    store
        .create_deployment(new_deployment("production", 1))
        .await
        .unwrap();
    store
        .set_environment_state(
            "staging",
            &EnvironmentState {
                current_release: Some(1),
                previous_release: None,
                data: json!({}),
            },
        )
        .await
        .unwrap();
    store
        .set_environment_state("qa", &EnvironmentState::default())
        .await
        .unwrap();
    assert_eq!(
        store.live_environments().await.unwrap(),
        vec!["production".to_string(), "staging".to_string()]
    );
}

/// Applying a configuration again bumps its generation and replaces the snapshot.
pub async fn applied_configs_count_generations(store: Arc<dyn Store>) {
    assert!(store.applied("staging").await.unwrap().is_none());
    let one = store
        .record_applied("staging", &json!({ "v": 1 }))
        .await
        .unwrap();
    assert_eq!(one.generation, 1);
    let two = store
        .record_applied("staging", &json!({ "v": 2 }))
        .await
        .unwrap();
    assert_eq!(two.generation, 2);
    let read = store.applied("staging").await.unwrap().unwrap();
    assert_eq!(read.snapshot, json!({ "v": 2 }));
    assert_eq!(read.generation, 2);
    assert!(store.applied("production").await.unwrap().is_none());
}

/// Metadata values are written, replaced and read.
pub async fn meta_round_trips(store: Arc<dyn Store>) {
    assert_eq!(store.meta("k").await.unwrap(), None);
    store.set_meta("k", "1").await.unwrap();
    store.set_meta("k", "2").await.unwrap();
    assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("2"));
}

/// A new store is fully migrated.
pub async fn schema_version_is_current(store: Arc<dyn Store>) {
    assert!(store.schema_version().await.unwrap() >= 1);
}

/// Concurrent appends all land with distinct ids.
pub async fn concurrent_appends_all_land(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(
                async move { store.append_event(event("concurrent", n)).await.unwrap().id },
            )
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 50);
    let stored = store.events(&EventQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 50);
}

fn new_release(environment: &str, version: &str) -> NewRelease {
    NewRelease {
        environment: environment.into(),
        version: version.into(),
        description: format!("deploy {version}"),
        snapshot: json!({ "version": version, "services": { "web": { "replicas": 2 } } }),
    }
}

fn new_deployment(environment: &str, release: i64) -> NewDeployment {
    NewDeployment {
        environment: environment.into(),
        kind: "deploy".into(),
        release,
        from_release: None,
        status: "running".into(),
        state: json!({ "step": 0 }),
    }
}

/// Releases are numbered from 1 in each environment, read back whole, newest first, and only
/// their flags change.
pub async fn releases_number_per_environment_and_keep_their_flags(store: Arc<dyn Store>) {
    let a1 = store
        .create_release(new_release("staging", "abc"))
        .await
        .unwrap();
    let a2 = store
        .create_release(new_release("staging", "def"))
        .await
        .unwrap();
    let b1 = store
        .create_release(new_release("production", "abc"))
        .await
        .unwrap();
    assert_eq!((a1.number, a2.number, b1.number), (1, 2, 1));
    let read = store.release("staging", 2).await.unwrap().unwrap();
    assert_eq!(read, a2);
    assert_eq!(read.snapshot["services"]["web"]["replicas"], 2);
    assert!(store.release("staging", 9).await.unwrap().is_none());
    let list = store.releases("staging", 10).await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![2, 1]
    );
    store
        .set_release_flags("staging", 1, Some(true), None)
        .await
        .unwrap();
    store
        .set_release_flags("staging", 2, None, Some(true))
        .await
        .unwrap();
    let r1 = store.release("staging", 1).await.unwrap().unwrap();
    let r2 = store.release("staging", 2).await.unwrap().unwrap();
    assert!(r1.pinned && !r1.pruned);
    assert!(!r2.pinned && r2.pruned);
    assert_eq!(
        r2.snapshot, a2.snapshot,
        "flags leave the release as it was"
    );
    assert!(matches!(
        store
            .set_release_flags("staging", 7, Some(true), None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // Concurrent creations never share a number.
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_release(new_release("qa", &format!("v{n}")))
                    .await
                    .unwrap()
                    .number
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for t in tasks {
        numbers.insert(t.await.unwrap());
    }
    assert_eq!(numbers, (1..=20).collect());
}

/// A second active deployment of the same environment is refused, naming the first; other
/// environments are independent; an ended deployment frees its environment.
pub async fn one_active_deployment_per_environment(store: Arc<dyn Store>) {
    let first = store
        .create_deployment(new_deployment("staging", 1))
        .await
        .unwrap();
    assert!(first.active);
    assert_eq!(first.status, "running");
    assert!(first.finished.is_none());
    match store.create_deployment(new_deployment("staging", 2)).await {
        Err(StoreError::Busy {
            environment,
            active,
        }) => {
            assert_eq!(environment, "staging");
            assert_eq!(active, first.id);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let other = store
        .create_deployment(new_deployment("production", 1))
        .await
        .unwrap();
    let active = store.active_deployments().await.unwrap();
    assert_eq!(
        active.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![first.id, other.id]
    );
    let ended = store
        .update_deployment(
            first.id,
            &DeploymentUpdate {
                status: "succeeded".into(),
                active: false,
                reason: Some("all steps passed".into()),
                state: json!({ "step": 4 }),
            },
            None,
        )
        .await
        .unwrap();
    assert!(!ended.active);
    assert!(ended.finished.is_some());
    assert_eq!(ended.reason.as_deref(), Some("all steps passed"));
    assert_eq!(ended.state["step"], 4);
    let second = store
        .create_deployment(new_deployment("staging", 2))
        .await
        .unwrap();
    assert!(second.id > other.id);
    let listed = store.deployments(Some("staging"), 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![second.id, first.id]
    );
    assert_eq!(store.deployments(None, 10).await.unwrap().len(), 3);
    assert_eq!(store.deployment(first.id).await.unwrap().unwrap(), ended);
    assert!(matches!(
        store
            .update_deployment(
                9999,
                &DeploymentUpdate {
                    status: "x".into(),
                    active: false,
                    reason: None,
                    state: json!({}),
                },
                None
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Updating a deployment with its environment's new state writes both.
pub async fn a_deployment_update_moves_the_environment_in_the_same_write(store: Arc<dyn Store>) {
    let d = store
        .create_deployment(new_deployment("staging", 3))
        .await
        .unwrap();
    let moved = EnvironmentState {
        current_release: Some(3),
        previous_release: Some(2),
        data: json!({ "overrides": { "A": "1" } }),
    };
    store
        .update_deployment(
            d.id,
            &DeploymentUpdate {
                status: "finishing".into(),
                active: true,
                reason: None,
                state: json!({ "committed": true }),
            },
            Some(&moved),
        )
        .await
        .unwrap();
    assert_eq!(store.environment_state("staging").await.unwrap(), moved);
    let d = store.deployment(d.id).await.unwrap().unwrap();
    assert!(d.active && d.finished.is_none());
    assert_eq!(d.state["committed"], true);
}

/// An environment nobody deployed has no releases; a written state reads back.
pub async fn environment_state_defaults_and_round_trips(store: Arc<dyn Store>) {
    let empty = store.environment_state("nowhere").await.unwrap();
    assert_eq!(empty.current_release, None);
    assert_eq!(empty.previous_release, None);
    let state = EnvironmentState {
        current_release: Some(1),
        previous_release: None,
        data: json!({ "standby": { "release": 1, "until_ms": 5 } }),
    };
    store
        .set_environment_state("staging", &state)
        .await
        .unwrap();
    assert_eq!(store.environment_state("staging").await.unwrap(), state);
    assert_eq!(
        store
            .environment_state("nowhere")
            .await
            .unwrap()
            .current_release,
        None
    );
}

/// Runs read back whole, newest first, filtered; start and end times are set once.
pub async fn runs_round_trip_and_filter_by_environment_commit_and_status(store: Arc<dyn Store>) {
    let new = |env: &str, commit: &str| NewRun {
        environment: env.into(),
        git_ref: "main".into(),
        commit: commit.into(),
        commit_time: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
        trigger: "manual".into(),
        status: "queued".into(),
        state: json!({ "stages": [] }),
    };
    let a = store.create_run(new("staging", "abc")).await.unwrap();
    let b = store.create_run(new("staging", "def")).await.unwrap();
    let c = store.create_run(new("production", "abc")).await.unwrap();
    assert!(a.id < b.id && b.id < c.id);
    assert_eq!(a.status, "queued");
    assert!(a.started.is_none() && a.finished.is_none());
    assert_eq!(a.commit_time.unwrap().as_second(), 1_700_000_000);
    let update = |status: &str, started: bool, finished: bool| RunUpdate {
        status: status.into(),
        started,
        finished,
        reason: (status == "failed").then(|| "exit 1".to_string()),
        failed_step: (status == "failed").then(|| "test/unit/run".to_string()),
        state: json!({ "status": status }),
    };
    let running = store
        .update_run(a.id, &update("running", true, false))
        .await
        .unwrap();
    let started = running.started.unwrap();
    let done = store
        .update_run(a.id, &update("succeeded", true, true))
        .await
        .unwrap();
    assert_eq!(done.started, Some(started), "the start time is kept");
    assert!(done.finished.is_some());
    store
        .update_run(b.id, &update("failed", true, true))
        .await
        .unwrap();
    let query = |env: Option<&str>, commit: Option<&str>, statuses: &[&str]| RunQuery {
        environment: env.map(str::to_string),
        commit: commit.map(str::to_string),
        statuses: statuses.iter().map(|s| s.to_string()).collect(),
        limit: 10,
    };
    let ids = |runs: Vec<crate::RunRecord>| runs.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.runs(&query(None, None, &[])).await.unwrap()),
        vec![c.id, b.id, a.id]
    );
    assert_eq!(
        ids(store
            .runs(&query(Some("staging"), None, &[]))
            .await
            .unwrap()),
        vec![b.id, a.id]
    );
    assert_eq!(
        ids(store
            .runs(&query(Some("staging"), Some("abc"), &["succeeded"]))
            .await
            .unwrap()),
        vec![a.id]
    );
    assert!(
        store
            .runs(&query(Some("production"), Some("abc"), &["succeeded"]))
            .await
            .unwrap()
            .is_empty()
    );
    let failed = store.run(b.id).await.unwrap().unwrap();
    assert_eq!(failed.failed_step.as_deref(), Some("test/unit/run"));
    assert_eq!(failed.state["status"], "failed");
    assert!(matches!(
        store.update_run(999, &update("x", false, false)).await,
        Err(StoreError::NotFound { .. })
    ));
}

fn notification(key: &str, channel: &str, at: i64) -> NewNotification {
    NewNotification {
        key: key.into(),
        channel: channel.into(),
        payload: format!("{{\"id\":\"{key}\"}}"),
        created_ms: at,
    }
}

/// State, history and the notifications an evaluation decided land together; a
/// notification queued twice (a replay after a crash) is queued once.
pub async fn alerting_commits_state_history_and_notifications_at_once(store: Arc<dyn Store>) {
    assert_eq!(store.alerting_state().await.unwrap(), None);
    let fired = NewAlertEvent {
        time_ms: 1000,
        rule: "api_down".into(),
        status: "fired".into(),
        severity: "P1".into(),
        labels: json!({"alertname": "api_down", "service": "web"}),
        value: Some(4.0),
        actor: None,
    };
    store
        .commit_alerting(
            "{\"v\":1}",
            std::slice::from_ref(&fired),
            &[notification("g#1", "hook", 1000)],
        )
        .await
        .unwrap();
    assert_eq!(
        store.alerting_state().await.unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    // Replayed after a crash: the same notification again, a new state, more history.
    let resolved = NewAlertEvent {
        time_ms: 2000,
        status: "resolved".into(),
        value: Some(f64::NAN),
        ..fired.clone()
    };
    store
        .commit_alerting(
            "{\"v\":2}",
            &[resolved],
            &[
                notification("g#1", "hook", 1000),
                notification("g#2", "hook", 2000),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.alerting_state().await.unwrap().as_deref(),
        Some("{\"v\":2}")
    );
    let due = store.due_notifications(5000, 10).await.unwrap();
    let keys: Vec<&str> = due.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["g#1", "g#2"]);
    assert_eq!(due[0].payload, "{\"id\":\"g#1\"}");
    let history = store
        .alert_history(&AlertHistoryQuery {
            rule: Some("api_down".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let statuses: Vec<&str> = history.iter().map(|h| h.event.status.as_str()).collect();
    assert_eq!(statuses, ["resolved", "fired"]);
    assert_eq!(history[1].event.labels["service"], "web");
    assert_eq!(history[1].event.value, Some(4.0));
    // A NaN value is stored as no value.
    assert_eq!(history[0].event.value, None);
    assert!(
        store
            .alert_history(&AlertHistoryQuery {
                rule: Some("other".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

/// A channel's notifications go out in order: one waiting for its retry holds back the later
/// ones of its channel, not those of other channels; sent ones leave the queue.
pub async fn the_outbox_keeps_each_channels_order_through_retries(store: Arc<dyn Store>) {
    let queued = [
        notification("a#1", "a", 100),
        notification("b#1", "b", 110),
        notification("a#2", "a", 120),
        notification("b#2", "b", 130),
    ];
    store.commit_alerting("{}", &[], &queued).await.unwrap();
    let due = store.due_notifications(1000, 10).await.unwrap();
    assert_eq!(due.len(), 4);
    let (a1, b1) = (due[0].seq, due[1].seq);
    store
        .notification_failed(a1, 5000, "the webhook answered 503")
        .await
        .unwrap();
    store.notification_sent(b1, 1000).await.unwrap();
    let keys =
        |due: Vec<crate::OutboxEntry>| -> Vec<String> { due.into_iter().map(|e| e.key).collect() };
    assert_eq!(
        keys(store.due_notifications(2000, 10).await.unwrap()),
        ["b#2"]
    );
    let later = store.due_notifications(5000, 10).await.unwrap();
    assert_eq!(later[0].attempts, 1);
    assert_eq!(
        later[0].last_error.as_deref(),
        Some("the webhook answered 503")
    );
    assert_eq!(keys(later), ["a#1", "a#2", "b#2"]);
    let all = store.outbox(10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|e| e.sent_ms.is_some()).count(), 1);
    assert_eq!(store.due_notifications(5000, 1).await.unwrap().len(), 1);
}

fn alert_row(time_ms: i64, rule: &str, status: &str) -> NewAlertEvent {
    NewAlertEvent {
        time_ms,
        rule: rule.into(),
        status: status.into(),
        severity: "P1".into(),
        labels: json!({ "service": "api" }),
        value: Some(1.0),
        actor: None,
    }
}

/// A reader following the history sees each row once, oldest first, from its cursor; a
/// timeline reads from a time.
pub async fn alert_history_is_followed_from_a_cursor_or_a_time(store: Arc<dyn Store>) {
    let rows: Vec<_> = (0..5)
        .map(|i| {
            alert_row(
                1_000 * i,
                "r",
                if i % 2 == 0 { "fired" } else { "resolved" },
            )
        })
        .collect();
    store.commit_alerting("{}", &rows, &[]).await.unwrap();
    let all = store
        .alert_history(&AlertHistoryQuery {
            after: Some(0),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let rest = store
        .alert_history(&AlertHistoryQuery {
            after: Some(all[2].id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![all[3].id, all[4].id]
    );
    let late = store
        .alert_history(&AlertHistoryQuery {
            since_ms: Some(3_000),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(late.len(), 2);
    assert_eq!(late[0].event.time_ms, 3_000);
}

fn entry(time_ms: i64, kind: &str, message: &str) -> NewIncidentEntry {
    NewIncidentEntry {
        time_ms,
        kind: kind.into(),
        actor: "system".into(),
        message: message.into(),
        data: json!({}),
    }
}

/// The alert history row that opens an incident opens one, however often it is read; the
/// record changes with its log in one write; the open ones are listed.
pub async fn an_alert_opens_one_incident_whose_log_keeps_every_change(store: Arc<dyn Store>) {
    let new = IncidentRecord {
        title: "api 5xx".into(),
        severity: "P1".into(),
        status: "triage".into(),
        environment: Some("production".into()),
        services: vec!["api".into()],
        opened_by: "alert:api_errors".into(),
        group: Some("api_errors{}".into()),
        alert_event: Some(7),
        opened_ms: 10_000,
        detected_ms: 9_000,
        ..Default::default()
    };
    let (first, created) = store
        .create_incident(&new, &entry(10_000, "opened", "opened by api_errors"))
        .await
        .unwrap();
    assert!(created);
    assert!(first.id > 0);
    let (again, created) = store
        .create_incident(&new, &entry(10_001, "opened", "again"))
        .await
        .unwrap();
    assert!(!created, "one incident per alert row");
    assert_eq!(again.id, first.id);
    let (manual, _) = store
        .create_incident(
            &IncidentRecord {
                alert_event: None,
                group: None,
                opened_by: "ann".into(),
                ..new.clone()
            },
            &entry(11_000, "opened", "opened by ann"),
        )
        .await
        .unwrap();
    assert_ne!(manual.id, first.id);

    let mut changed = first.clone();
    changed.status = "resolved".into();
    changed.commander = Some("ann".into());
    changed.resolved_ms = Some(20_000);
    store
        .update_incident(&changed, &entry(20_000, "resolved", "fixed"))
        .await
        .unwrap();
    assert_eq!(
        store.incident(first.id).await.unwrap(),
        Some(changed.clone())
    );
    let log = store.incident_log(first.id).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| e.entry.kind.as_str())
            .collect::<Vec<_>>(),
        ["opened", "resolved"]
    );
    assert_eq!(log[1].entry.message, "fixed");

    let open = store
        .incidents(&IncidentQuery {
            open: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [manual.id]);
    let all = store
        .incidents(&IncidentQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        [manual.id, first.id],
        "newest first"
    );
    let missing = IncidentRecord { id: 999, ..changed };
    assert!(matches!(
        store
            .update_incident(&missing, &entry(0, "update", "x"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.incident(999).await.unwrap(), None);
}

/// Action items belong to an incident and are open until done.
pub async fn action_items_stay_open_until_done(store: Arc<dyn Store>) {
    let (incident, _) = store
        .create_incident(
            &IncidentRecord {
                title: "t".into(),
                severity: "P2".into(),
                status: "triage".into(),
                opened_by: "ann".into(),
                ..Default::default()
            },
            &entry(1, "opened", "opened"),
        )
        .await
        .unwrap();
    let add = |text: &str| NewAction {
        incident: incident.id,
        text: text.into(),
        owner: Some("bob".into()),
        due: Some("2026-12-31".into()),
        created_ms: 5,
    };
    let a = store
        .add_action(&add("alert on queue depth"))
        .await
        .unwrap();
    let b = store
        .add_action(&add("canary the migration"))
        .await
        .unwrap();
    assert_eq!(a.owner.as_deref(), Some("bob"));
    let done = store.set_action_done(a.id, Some(9)).await.unwrap();
    assert_eq!(done.done_ms, Some(9));
    let open = store.actions(None, true).await.unwrap();
    assert_eq!(open.iter().map(|x| x.id).collect::<Vec<_>>(), [b.id]);
    let all = store.actions(Some(incident.id), false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(matches!(
        store
            .add_action(&NewAction {
                incident: 12345,
                ..add("x")
            })
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.set_action_done(12345, None).await,
        Err(StoreError::NotFound { .. })
    ));
}
