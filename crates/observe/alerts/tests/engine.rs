//! The alerting engine end to end, with real parts: the embedded metrics store, a SQLite
//! state database, a local webhook receiver counting what arrives by idempotency key. A
//! condition becomes true, the receiver gets one notification; the receiver goes down and
//! comes back, it gets everything in order; the engine is dropped between deciding and
//! sending (as a `kill -9` would), the next one sends it, once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use slipway_alerts::engine::{Alerting, Channel};
use slipway_alerts::notify::{Endpoint, Webhook};
use slipway_alerts::rule::Rule;
use slipway_metrics::backend::Embedded;
use slipway_metrics::labels::Labels;
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};
use slipway_spec::model::Alert;
use slipway_store::{SqliteStore, Store};

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    up: Arc<Mutex<bool>>,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    if !*r.up.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.got
        .lock()
        .unwrap()
        .push((key, serde_json::from_str(&body).unwrap()));
    StatusCode::OK
}

async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    *r.up.lock().unwrap() = true;
    let app = Router::new().fallback(record).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn rules() -> Vec<Rule> {
    let api_down: Alert = toml::from_str(
        "expr = 'health_check_failures > 3'\nseverity = \"P1\"\nchannels = [\"hook\"]\nsummary = \"{{ $labels.service }} is down\"",
    )
    .unwrap();
    vec![Rule::from_spec("api_down", &api_down).unwrap()]
}

fn channels(url: &str) -> HashMap<String, Channel> {
    HashMap::from([(
        "hook".to_string(),
        Channel {
            notifier: Arc::new(Webhook::new(Endpoint {
                url: url.to_string(),
                key: None,
                chat: None,
            })),
            severities: vec![],
        },
    )])
}

#[tokio::test]
async fn notifications_survive_a_receiver_outage_and_a_crash_between_deciding_and_sending() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Tsdb::open(&dir.path().join("metrics"), TsdbOptions::default()).unwrap();
    let backend = Embedded::new(Arc::clone(&metrics));
    let db = dir.path().join("state.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let (r, url) = receiver().await;
    let failures =
        |svc: &str| Labels::from_pairs([("__name__", "health_check_failures"), ("service", svc)]);
    let push = |now: i64, web: f64, api: f64, db: f64| {
        metrics
            .append_batch(&[
                (failures("web"), now, web),
                (failures("api"), now, api),
                (failures("db"), now, db),
            ])
            .unwrap();
    };
    let mut now = 1_800_000_000_000i64;

    // web breaches: one notification, delivered at once (P1 has no group_wait).
    let mut engine = Alerting::open(rules(), channels(&url), store.clone(), "http://slipway")
        .await
        .unwrap();
    push(now, 5.0, 0.0, 0.0);
    assert_eq!(engine.evaluate(&backend, now).await.unwrap(), 1);
    assert_eq!(engine.deliver(now).await.unwrap(), 1);
    {
        let got = r.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1["version"], "4");
        assert_eq!(got[0].1["status"], "firing");
        assert_eq!(
            got[0].1["alerts"][0]["annotations"]["summary"],
            "web is down"
        );
        assert_eq!(got[0].0, "hook:{alertname=\"api_down\"}#1");
    }

    // The receiver goes down for two minutes; meanwhile web recovers, api and then db
    // breach: two more notifications are decided (P1 batches changes every 30 s), kept.
    *r.up.lock().unwrap() = false;
    for k in 1..=120 {
        now += 1000;
        let db = if k > 40 { 7.0 } else { 0.0 };
        push(now, 0.0, 6.0, db);
        engine.evaluate(&backend, now).await.unwrap();
        assert_eq!(engine.deliver(now).await.unwrap(), 0);
    }
    let waiting: Vec<_> = store
        .outbox(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.sent_ms.is_none())
        .collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    // The older one was tried (and refused); the newer waits behind it, untried.
    let (newer, older) = (&waiting[0], &waiting[1]);
    assert!(older.seq < newer.seq);
    assert!(older.attempts > 1, "{older:?}");
    assert!(
        older
            .last_error
            .as_deref()
            .is_some_and(|m| m.contains("503"))
    );
    assert_eq!(newer.attempts, 0);

    // Back up: everything arrives, in order, once each.
    *r.up.lock().unwrap() = true;
    let mut delivered = 0;
    for _ in 0..300 {
        now += 1000;
        push(now, 0.0, 6.0, 7.0);
        engine.evaluate(&backend, now).await.unwrap();
        delivered += engine.deliver(now).await.unwrap();
        if delivered == 2 {
            break;
        }
    }
    assert_eq!(delivered, 2);
    let keys: Vec<String> = r.got.lock().unwrap().iter().map(|g| g.0.clone()).collect();
    assert_eq!(
        keys,
        (1..=3)
            .map(|i| format!("hook:{{alertname=\"api_down\"}}#{i}"))
            .collect::<Vec<_>>()
    );
    {
        let got = r.got.lock().unwrap();
        let status = |n: usize, svc: &str| -> String {
            got[n].1["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["labels"]["service"] == svc)
                .map(|a| a["status"].as_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            (status(1, "web"), status(1, "api")),
            ("resolved".into(), "firing".into())
        );
        assert_eq!(status(2, "db"), "firing");
    }

    // A crash between deciding and sending: everything recovers, the engine commits the
    // resolved notification and is dropped before it sends. The next one (from the same
    // database) sends it, once, and does not decide it again.
    for _ in 0..40 {
        now += 1000;
        push(now, 0.0, 0.0, 0.0);
        engine.evaluate(&backend, now).await.unwrap();
    }
    drop(engine);
    let pending: Vec<_> = store
        .outbox(20)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.sent_ms.is_none())
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let mut engine = Alerting::open(rules(), channels(&url), store.clone(), "http://slipway")
        .await
        .unwrap();
    now += 1000;
    push(now, 0.0, 0.0, 0.0);
    assert_eq!(engine.evaluate(&backend, now).await.unwrap(), 0);
    assert_eq!(engine.deliver(now).await.unwrap(), 1);
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].1["status"], "resolved");
    assert_eq!(got[3].1["notification_reason"], "all alerts resolved");
    // The history has it all.
    let history = store
        .alert_history(&slipway_store::AlertHistoryQuery {
            rule: Some("api_down".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |s: &str| history.iter().filter(|h| h.event.status == s).count();
    assert_eq!((count("fired"), count("resolved")), (3, 3));
}

/// A channel that keeps failing raises `slipway_channel_failing` on the other channels, not on
/// itself; its health follows what each pass over the outbox did.
#[tokio::test]
async fn a_failing_channel_is_reported_on_the_others() {
    use slipway_alerts::engine::{CHANNEL_FAILING, ChannelHealth, Pacer, deliver};
    let dir = tempfile::tempdir().unwrap();
    let metrics = Tsdb::open(&dir.path().join("metrics"), TsdbOptions::default()).unwrap();
    let backend = Embedded::new(Arc::clone(&metrics));
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let (good, good_url) = receiver().await;
    let (bad, bad_url) = receiver().await;
    *bad.up.lock().unwrap() = false;
    let mut chans = channels(&good_url);
    chans.extend(
        channels(&bad_url)
            .into_values()
            .map(|c| ("pager".to_string(), c)),
    );
    let failing: Alert = toml::from_str(
        "expr = 'slipway_notification_channel_failing_seconds > 120'\nseverity = \"P2\"",
    )
    .unwrap();
    let mut rules = rules();
    rules.push(Rule::from_spec(CHANNEL_FAILING, &failing).unwrap());
    // Every channel, so the pager's own alert would reach it if nothing kept it away.
    rules[0].channels = vec![];
    let mut engine = Alerting::open(rules, chans, store.clone(), "http://slipway")
        .await
        .unwrap();
    let mut health = ChannelHealth::default();
    let mut pacer = Pacer::default();
    let mut now = 1_800_000_000_000i64;
    let series = |c: &str| {
        Labels::from_pairs([
            ("__name__", "slipway_notification_channel_failing_seconds"),
            ("channel", c),
        ])
    };
    metrics
        .append_batch(&[(
            Labels::from_pairs([("__name__", "health_check_failures"), ("service", "web")]),
            now,
            9.0,
        )])
        .unwrap();
    for _ in 0..200 {
        engine.evaluate(&backend, now).await.unwrap();
        let report = deliver(store.as_ref(), &engine.senders(), &mut pacer, now)
            .await
            .unwrap();
        health.record(&report, now);
        metrics
            .append_batch(&[
                (series("hook"), now, health.failing_seconds("hook", now)),
                (series("pager"), now, health.failing_seconds("pager", now)),
            ])
            .unwrap();
        now += 1000;
    }
    assert_eq!(health.failing.keys().collect::<Vec<_>>(), ["pager"]);
    assert!(health.failing["pager"].1.contains("503"), "{health:?}");
    let got = good.got.lock().unwrap().clone();
    let names: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["commonLabels"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api_down", CHANNEL_FAILING], "{got:?}");
    assert_eq!(got[1].1["commonLabels"]["channel"], "pager");
    // The pager was never told about itself: its queue holds api_down alone.
    let queued: Vec<String> = store
        .outbox(50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.channel == "pager")
        .map(|e| e.payload)
        .collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].contains("api_down"));
    // Back up: delivered, well again.
    *bad.up.lock().unwrap() = true;
    for _ in 0..400 {
        let report = deliver(store.as_ref(), &engine.senders(), &mut pacer, now)
            .await
            .unwrap();
        health.record(&report, now);
        if health.failing.is_empty() {
            break;
        }
        now += 1000;
    }
    assert!(health.failing.is_empty());
    assert_eq!(bad.got.lock().unwrap().len(), 1);
}
