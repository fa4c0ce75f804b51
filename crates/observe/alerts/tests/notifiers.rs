//! One contract for every channel kind, each against a real local HTTP server standing in for
//! its endpoint that records what arrives and checks it has the shape the real service
//! requires; the Alertmanager channel against a real Alertmanager (Debian's
//! `prometheus-alertmanager`), which must take the alerts and show them with our fingerprints.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::Value;
use slipway_alerts::email::{Email, Security, Smtp};
use slipway_alerts::notify::{
    AlertItem, Alertmanager, Endpoint, Notification, Notifier, PagerDuty, Slack, Status, Telegram,
    Webhook,
};

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    answer: Arc<Mutex<u16>>,
}

async fn record(State(r): State<Receiver>, uri: Uri, body: String) -> StatusCode {
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    r.got.lock().unwrap().push((uri.path().to_string(), json));
    StatusCode::from_u16(*r.answer.lock().unwrap()).unwrap()
}

/// A receiver on loopback answering `status`; its base URL.
async fn receiver(status: u16) -> (Receiver, String) {
    let r = Receiver::default();
    *r.answer.lock().unwrap() = status;
    let app = Router::new().fallback(record).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, base)
}

fn alert(service: &str, status: Status) -> AlertItem {
    AlertItem {
        status,
        labels: vec![
            ("alertname".into(), "api_down".into()),
            ("service".into(), service.into()),
            ("severity".into(), "P1".into()),
        ],
        annotations: vec![
            (
                "summary".into(),
                format!("{service} fails its health checks"),
            ),
            (
                "runbook_url".into(),
                "https://runbooks.example/api_down".into(),
            ),
        ],
        starts_at: 1_796_000_000_123,
        ends_at: (status == Status::Resolved).then_some(1_796_000_300_000),
        generator_url: "http://slipway:7070/alerts/api_down".into(),
    }
}

fn notification(status: Status) -> Notification {
    Notification {
        id: format!("g1-{}", status.as_str()),
        group_key: "{}:{alertname=\"api_down\"}".into(),
        receiver: "oncall".into(),
        status,
        group_labels: vec![("alertname".into(), "api_down".into())],
        common_labels: vec![
            ("alertname".into(), "api_down".into()),
            ("severity".into(), "P1".into()),
        ],
        common_annotations: vec![],
        alerts: vec![alert("web", status), alert("api", status)],
        external_url: "http://slipway:7070".into(),
        reason: "first notification".into(),
        acknowledged_by: None,
    }
}

fn endpoint(base: &str) -> Endpoint {
    Endpoint {
        url: base.to_string(),
        key: Some("KEY-123".into()),
        chat: Some("-100200300".into()),
    }
}

fn make(kind: &str, base: &str) -> Box<dyn Notifier> {
    match kind {
        "webhook" => Box::new(Webhook::new(Endpoint {
            url: format!("{base}/hook"),
            ..endpoint(base)
        })),
        "slack" => Box::new(Slack::new(Endpoint {
            url: format!("{base}/services/T0/B0/X"),
            ..endpoint(base)
        })),
        "pagerduty" => Box::new(PagerDuty::new(endpoint(base))),
        "telegram" => Box::new(Telegram::new(endpoint(base))),
        "alertmanager" => Box::new(Alertmanager::new(endpoint(base))),
        other => panic!("{other}"),
    }
}

const KINDS: [&str; 5] = ["webhook", "slack", "pagerduty", "telegram", "alertmanager"];

fn rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok() || s == "0001-01-01T00:00:00Z")
}

/// What each kind's endpoint requires of a request.
fn check(kind: &str, path: &str, body: &Value, status: Status) {
    let firing = status == Status::Firing;
    match kind {
        "webhook" => {
            assert_eq!(path, "/hook");
            assert_eq!(body["version"], "4");
            assert_eq!(body["status"], status.as_str());
            assert_eq!(body["receiver"], "oncall");
            assert_eq!(body["groupKey"], "{}:{alertname=\"api_down\"}");
            assert_eq!(body["groupLabels"]["alertname"], "api_down");
            let alerts = body["alerts"].as_array().unwrap();
            assert_eq!(alerts.len(), 2);
            for a in alerts {
                assert!(rfc3339(&a["startsAt"]) && rfc3339(&a["endsAt"]), "{a}");
                assert_eq!(a["endsAt"] == "0001-01-01T00:00:00Z", firing, "{a}");
                let fp = a["fingerprint"].as_str().unwrap();
                assert!(fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()));
                assert_eq!(a["labels"]["severity"], "P1");
            }
        }
        "slack" => {
            assert_eq!(path, "/services/T0/B0/X");
            let text = body["text"].as_str().unwrap();
            assert!(
                text.contains(if firing { "FIRING:2" } else { "RESOLVED" }),
                "{text}"
            );
            let blocks = body["blocks"].as_array().unwrap();
            assert_eq!(blocks[0]["type"], "header");
            assert_eq!(blocks[0]["text"]["type"], "plain_text");
            assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
            assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
            assert!(
                body.to_string()
                    .contains("<https://runbooks.example/api_down|Runbook>")
            );
        }
        "pagerduty" => {
            assert_eq!(path, "/v2/enqueue");
            assert_eq!(body["routing_key"], "KEY-123");
            assert_eq!(
                body["event_action"],
                if firing { "trigger" } else { "resolve" }
            );
            let dedup = body["dedup_key"].as_str().unwrap();
            assert!(dedup.len() == 64 && dedup.chars().all(|c| c.is_ascii_hexdigit()));
            let p = &body["payload"];
            assert!(p["summary"].as_str().unwrap().chars().count() <= 1024);
            assert!(
                ["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap())
            );
            assert_eq!(p["severity"], "critical");
            assert!(p["source"].is_string());
            assert_eq!(
                body["links"][0]["href"],
                "https://runbooks.example/api_down"
            );
        }
        "telegram" => {
            assert_eq!(path, "/botKEY-123/sendMessage");
            assert_eq!(body["chat_id"], "-100200300");
            assert_eq!(body["parse_mode"], "HTML");
            let text = body["text"].as_str().unwrap();
            assert!(
                text.chars().count() <= 4096 && text.starts_with("<b>"),
                "{text}"
            );
        }
        "alertmanager" => {
            assert_eq!(path, "/api/v2/alerts");
            let alerts = body.as_array().unwrap();
            assert_eq!(alerts.len(), 2);
            for a in alerts {
                assert_eq!(a["labels"]["alertname"], "api_down");
                assert!(rfc3339(&a["startsAt"]));
                assert_eq!(a.get("endsAt").is_none(), firing, "{a}");
            }
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn every_channel_sends_what_its_receiver_requires_and_says_when_to_retry() {
    for kind in KINDS {
        let (r, base) = receiver(200).await;
        let n = make(kind, &base);
        assert_eq!(n.kind(), kind);
        for status in [Status::Firing, Status::Resolved] {
            n.send(&notification(status)).await.unwrap();
        }
        let got = r.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{kind}: {got:?}");
        check(kind, &got[0].0, &got[0].1, Status::Firing);
        check(kind, &got[1].0, &got[1].1, Status::Resolved);
        if kind == "pagerduty" {
            // One incident: trigger and resolve share the dedup key.
            assert_eq!(got[0].1["dedup_key"], got[1].1["dedup_key"]);
        }
        // An acknowledgement: PagerDuty acknowledges the incident, chats say who took it; the
        // webhook and Alertmanager have no such thing and skip it.
        let mut ack = notification(Status::Firing);
        ack.id = "g1-ack".into();
        ack.reason = "acknowledged".into();
        ack.acknowledged_by = Some("ana".into());
        assert_eq!(
            n.tells_acks(),
            !matches!(kind, "webhook" | "alertmanager"),
            "{kind}"
        );
        if n.tells_acks() {
            n.send(&ack).await.unwrap();
            let got = r.got.lock().unwrap().clone();
            let body = &got[2].1;
            match kind {
                "pagerduty" => {
                    assert_eq!(body["event_action"], "acknowledge");
                    assert_eq!(body["dedup_key"], got[0].1["dedup_key"]);
                }
                _ => assert!(
                    body.to_string().contains("ACKNOWLEDGED by ana"),
                    "{kind}: {body}"
                ),
            }
            r.got.lock().unwrap().pop();
        }

        // A receiver failing on its side is worth another try; one refusing the request is not.
        for (answer, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (400, false),
            (404, false),
        ] {
            *r.answer.lock().unwrap() = answer;
            let e = n.send(&notification(Status::Firing)).await.unwrap_err();
            assert_eq!(e.retryable, retryable, "{kind} {answer}: {e}");
            assert!(e.message.contains(&answer.to_string()), "{kind}: {e}");
        }
    }
    // Nobody there: retry, and the error shows neither the URL nor the key.
    let port = slipway_metrics_testkit::free_port();
    for kind in KINDS {
        let n = make(kind, &format!("http://127.0.0.1:{port}"));
        let e = n.send(&notification(Status::Firing)).await.unwrap_err();
        assert!(e.retryable, "{kind}: {e}");
        assert!(
            !e.message.contains("KEY-123") && !e.message.contains("127.0.0.1"),
            "{kind}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_takes_our_alerts_with_our_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let am = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            slipway_metrics_testkit::Alertmanager::start(
                &dir,
                "route:\n  receiver: none\nreceivers:\n  - name: none\n",
            )
        }
    })
    .await
    .unwrap();
    let n = Alertmanager::new(Endpoint {
        url: am.base.clone(),
        key: None,
        chat: None,
    });
    let firing = notification(Status::Firing);
    n.send(&firing).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let r: Value = reqwest::get(format!("{}/api/v2/alerts", am.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r.as_array().is_some_and(|a| a.len() == 2) {
            break r;
        }
        assert!(Instant::now() < deadline, "alertmanager shows {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for a in shown.as_array().unwrap() {
        let ours = firing
            .alerts
            .iter()
            .find(|x| Some(x.label("service").unwrap()) == a["labels"]["service"].as_str())
            .unwrap();
        assert_eq!(a["fingerprint"], ours.fingerprint().as_str(), "{a}");
        assert_eq!(a["status"]["state"], "active");
        assert_eq!(
            a["annotations"]["summary"],
            ours.annotation("summary").unwrap()
        );
        assert_eq!(
            a["startsAt"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond(),
            ours.starts_at
        );
    }
    // Resolved: Alertmanager counts them resolved (its `endsAt` is in the past).
    n.send(&notification(Status::Resolved)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r: Value = reqwest::get(format!("{}/api/v2/alerts?active=true", am.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager still shows {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn smtp(server: &slipway_metrics_testkit::Smtp) -> Smtp {
    Smtp {
        host: "localhost".into(),
        port: server.port,
        security: Security::StartTls,
        user: Some(server.user.clone()),
        password: Some(server.password.clone()),
        from: "Slipway <slipway@example.com>".into(),
        to: vec!["oncall@example.com".into(), "ops@example.com".into()],
        extra_roots: vec![server.cert_pem.clone()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_over_starttls_logged_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || slipway_metrics_testkit::Smtp::start(&dir)
    })
    .await
    .unwrap();
    let n = Email::new(smtp(&server)).unwrap();
    assert_eq!(n.kind(), "email");
    for status in [Status::Firing, Status::Resolved] {
        n.send(&notification(status)).await.unwrap();
    }
    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    for (m, status) in got.iter().zip([Status::Firing, Status::Resolved]) {
        assert_eq!(m["defects"], serde_json::json!([]), "{m}");
        assert_eq!(m["tls"], true, "sent in the clear: {m}");
        assert_eq!(m["auth_user"], server.user.as_str());
        assert_eq!(m["mail_from"], "slipway@example.com");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["oncall@example.com", "ops@example.com"])
        );
        assert_eq!(m["content_type"], "multipart/alternative");
        let subject = m["subject"].as_str().unwrap();
        let text = m["text"].as_str().unwrap();
        let html = m["html"].as_str().unwrap();
        assert!(subject.contains("api_down"), "{subject}");
        match status {
            Status::Firing => assert!(subject.starts_with("[FIRING:2] P1"), "{subject}"),
            Status::Resolved => assert!(subject.starts_with("[RESOLVED]"), "{subject}"),
        }
        for part in [text, html] {
            assert!(part.contains("web fails its health checks"), "{part}");
            assert!(part.contains("api fails its health checks"), "{part}");
            assert!(part.contains("https://runbooks.example/api_down"), "{part}");
        }
        assert!(html.contains("<a href=\"https://runbooks.example/api_down\">Runbook</a>"));
        assert!(text.contains("service=web"), "{text}");
    }
    // One thread for the group; each message its own id (from the notification's).
    assert_ne!(got[0]["message_id"], got[1]["message_id"]);
    assert!(got[0]["message_id"].as_str().unwrap().contains("g1-firing"));
    assert_eq!(got[0]["references"], got[1]["references"]);
    assert_eq!(got[0]["in_reply_to"], got[0]["references"]);

    // A server saying "later" is tried again; one saying "never" is not.
    for (reply, retryable) in [
        ("451 4.3.0 try again later", true),
        ("550 5.7.1 rejected", false),
    ] {
        server.answer(Some(reply));
        let e = n.send(&notification(Status::Firing)).await.unwrap_err();
        assert_eq!(e.retryable, retryable, "{reply}: {e}");
        assert!(e.message.contains(&reply[..3]), "{e}");
    }
    server.answer(None);

    // A wrong password is refused for good, and the error does not show it.
    let wrong = Email::new(Smtp {
        password: Some("not-the-Pa55word".into()),
        ..smtp(&server)
    })
    .unwrap();
    let e = wrong.send(&notification(Status::Firing)).await.unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(!e.message.contains("not-the-Pa55word"), "{e}");
    // A certificate nobody vouches for is not trusted.
    let untrusted = Email::new(Smtp {
        extra_roots: vec![],
        ..smtp(&server)
    })
    .unwrap();
    let e = untrusted
        .send(&notification(Status::Firing))
        .await
        .unwrap_err();
    assert!(e.message.contains("certificate"), "{e}");
    // Nobody there: retry.
    let gone = Email::new(Smtp {
        port: slipway_metrics_testkit::free_port(),
        ..smtp(&server)
    })
    .unwrap();
    let e = gone.send(&notification(Status::Firing)).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert_eq!(server.received().len(), 2, "nothing else was accepted");

    // An address that is not one is named.
    let e = Email::new(Smtp {
        to: vec!["oncall at example".into()],
        ..smtp(&server)
    })
    .err()
    .unwrap();
    assert!(e.contains("oncall at example"), "{e}");
}

/// Slack's Web API as a local stand-in: records each call (method, bearer, body) and
/// answers as Slack does (`ok`, a `ts` for a posted message), or refuses with `error`.
#[derive(Clone, Default)]
struct FakeSlack {
    calls: Arc<Mutex<Vec<(String, String, Value)>>>,
    refuse: Arc<Mutex<Option<String>>>,
    posted: Arc<Mutex<u32>>,
}

async fn slack_api(
    State(f): State<FakeSlack>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let method = uri.path().trim_start_matches("/api/").to_string();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if let Some(e) = f.refuse.lock().unwrap().clone() {
        return axum::Json(serde_json::json!({"ok": false, "error": e}));
    }
    f.calls
        .lock()
        .unwrap()
        .push((method.clone(), bearer, body.clone()));
    let mut n = f.posted.lock().unwrap();
    if method == "chat.postMessage" {
        *n += 1;
        return axum::Json(
            serde_json::json!({"ok": true, "channel": body["channel"], "ts": format!("1796000000.{:06}", *n)}),
        );
    }
    axum::Json(serde_json::json!({"ok": true, "ts": body["ts"]}))
}

#[tokio::test]
async fn slack_through_its_web_api_keeps_each_group_in_one_thread() {
    use slipway_alerts::slack::SlackApp;
    let fake = FakeSlack::default();
    let app = Router::new().fallback(slack_api).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn slipway_store::Store> = Arc::new(
        slipway_store::SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let make = || {
        SlackApp::new(
            Endpoint {
                url: base.clone(),
                key: Some("xoxb-TOKEN".into()),
                chat: Some("C0ALERTS".into()),
            },
            store.clone(),
        )
    };
    let n = make();
    assert_eq!(n.kind(), "slack");
    let calls = || fake.calls.lock().unwrap().clone();

    // The first notification opens a thread.
    n.send(&notification(Status::Firing)).await.unwrap();
    let c = calls();
    assert_eq!(c.len(), 1);
    let (method, bearer, body) = &c[0];
    assert_eq!(method, "chat.postMessage");
    assert_eq!(bearer, "Bearer xoxb-TOKEN");
    assert_eq!(body["channel"], "C0ALERTS");
    assert!(body.get("thread_ts").is_none());
    check("slack", "/services/T0/B0/X", body, Status::Firing);

    // Acknowledged, after a restart (a new notifier, the same store): the first message says
    // so, and the thread tells it.
    let n = make();
    let mut ack = notification(Status::Firing);
    ack.acknowledged_by = Some("ana".into());
    n.send(&ack).await.unwrap();
    let c = calls();
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[1].0, "chat.update");
    assert_eq!(c[1].2["ts"], "1796000000.000001");
    assert!(
        c[1].2["text"]
            .as_str()
            .unwrap()
            .contains("ACKNOWLEDGED by ana")
    );
    assert_eq!(c[2].0, "chat.postMessage");
    assert_eq!(c[2].2["thread_ts"], "1796000000.000001");
    assert_eq!(c[2].2["reply_broadcast"], false);

    // Resolved: the first message turns resolved, the reply shows in the channel too.
    n.send(&notification(Status::Resolved)).await.unwrap();
    let c = calls();
    assert_eq!(c.len(), 5);
    assert_eq!(c[3].0, "chat.update");
    assert!(c[3].2["text"].as_str().unwrap().contains("RESOLVED"));
    assert_eq!(c[4].2["thread_ts"], "1796000000.000001");
    assert_eq!(c[4].2["reply_broadcast"], true);

    // Firing again later: a new thread.
    n.send(&notification(Status::Firing)).await.unwrap();
    let c = calls();
    assert_eq!(c.len(), 6);
    assert_eq!(c[5].0, "chat.postMessage");
    assert!(c[5].2.get("thread_ts").is_none());

    // Slack's refusals: slower is worth a retry, a wrong channel or token is not.
    for (error, retryable) in [
        ("ratelimited", true),
        ("channel_not_found", false),
        ("invalid_auth", false),
    ] {
        *fake.refuse.lock().unwrap() = Some(error.into());
        let e = n.send(&notification(Status::Firing)).await.unwrap_err();
        assert_eq!(e.retryable, retryable, "{error}: {e}");
        assert!(
            e.message.contains(error) && !e.message.contains("xoxb"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_deploy_is_a_pagerduty_change_event_and_nothing_elsewhere() {
    let change = slipway_alerts::notify::Change {
        summary: "deployment of web@v42 succeeded in 41000ms".into(),
        source: "production".into(),
        at: 1_796_000_000_000,
        details: serde_json::json!({"outcome": "succeeded", "deployment": "deployment-7"}),
        link: Some("http://slipway:7070/v1/deployments".into()),
    };
    for kind in KINDS {
        let (r, base) = receiver(202).await;
        make(kind, &base).change(&change).await.unwrap();
        let got = r.got.lock().unwrap().clone();
        if kind != "pagerduty" {
            assert!(got.is_empty(), "{kind}: {got:?}");
            continue;
        }
        assert_eq!(got.len(), 1);
        let (path, body) = &got[0];
        assert_eq!(path, "/v2/change/enqueue");
        assert_eq!(body["routing_key"], "KEY-123");
        assert_eq!(body["payload"]["summary"], change.summary);
        assert_eq!(body["payload"]["source"], "production");
        assert!(rfc3339(&body["payload"]["timestamp"]), "{body}");
        assert_eq!(body["payload"]["custom_details"]["outcome"], "succeeded");
        assert_eq!(
            body["links"][0]["href"],
            "http://slipway:7070/v1/deployments"
        );
        assert!(
            body.get("event_action").is_none(),
            "a change has no action: {body}"
        );
    }
}
