//! Alerts end to end: a rule in `slipway.toml` over a scraped exporter, a webhook channel to
//! a local receiver; onset to delivery, the CLI's view, ack, silences, resolution, and a
//! `kill -9` that neither loses nor repeats a firing alert.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use slipway_metrics_testkit::{Exporter, Receiver};

use crate::support::{Project, wait_for};

fn project(exporter: &str, receiver: &str) -> Project {
    Project::new(&format!(
        r#"
[project]
name = "alerting"

[services.worker]
kind = "worker"
start = "slipway-sample worker"

[metrics]
interval = "1s"
targets = [{{ name = "app", url = "{exporter}" }}]

[alerting]
builtin = false

[alerts.high_queue_depth]
expr = 'queue_depth > 100'
for = "2s"
recover = 80
severity = "P1"
channels = ["hook"]
summary = "{{{{ $labels.queue }}}} queue at {{{{ $value }}}}"
runbook = "docs/runbooks/queues.md"

[channels.hook]
type = "webhook"
url = "{receiver}/hook"
"#
    ))
}

#[test]
fn a_breach_reaches_a_webhook_within_for_plus_two_seconds_and_a_restart_neither_loses_nor_repeats_it()
 {
    let depth = Arc::new(AtomicU32::new(10));
    let d = depth.clone();
    // When a scrape first read the breach: the condition is true from then on.
    let seen: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let s = seen.clone();
    let exporter = Exporter::start(move |_| {
        let v = d.load(Ordering::SeqCst);
        if v > 100 {
            s.lock().unwrap().get_or_insert_with(Instant::now);
        }
        format!("# TYPE queue_depth gauge\nqueue_depth{{queue=\"jobs\"}} {v}\n")
    });
    let receiver = Receiver::start();
    let project = project(&exporter.url, &receiver.base);
    project.ok(&["validate"]);
    let mut daemon = project.start();
    wait_for("the rule to be evaluated", Duration::from_secs(30), || {
        let v = project.json(&["alerts"]);
        v["rules"][0]["evaluated_at"].is_string().then_some(())
    });
    assert!(project.ok(&["alerts"]).contains("nothing fires"));

    // Onset: the exporter says 150, and a scrape reads it. Delivered within `for` (2 s) + 2 s.
    depth.store(150, Ordering::SeqCst);
    let first = wait_for("the notification", Duration::from_secs(15), || {
        receiver.received().into_iter().next()
    });
    let onset = seen.lock().unwrap().expect("a scrape read the breach");
    let latency = first.at - onset;
    eprintln!("condition true → delivered: {latency:?}");
    assert!(latency <= Duration::from_secs(4), "{latency:?}");
    assert_eq!(first.path, "/hook");
    let body = &first.body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "high_queue_depth");
    assert_eq!(alert["labels"]["severity"], "P1");
    assert_eq!(alert["labels"]["job"], "app");
    assert_eq!(alert["annotations"]["summary"], "jobs queue at 150");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/runbooks/queues.md"
    );
    assert!(!first.key.is_empty());

    // The CLI shows it firing, and the delivery.
    let view = project.json(&["alerts"]);
    assert_eq!(view["alerts"][0]["state"], "firing", "{view:#}");
    assert_eq!(view["alerts"][0]["labels"]["queue"], "jobs");
    assert!(view["deliveries"][0]["sent"].is_string(), "{view:#}");
    let table = project.ok(&["alerts"]);
    assert!(
        table.contains("high_queue_depth") && table.contains("firing"),
        "{table}"
    );

    // Between the thresholds (hysteresis): still firing, nothing new.
    depth.store(90, Ordering::SeqCst);
    wait_for("hysteresis to hold it", Duration::from_secs(15), || {
        let v = project.json(&["alerts"]);
        (v["alerts"][0]["holding"] == true).then_some(())
    });

    // kill -9 and start again: the firing alert comes back as it was, not sent again.
    daemon.kill();
    let daemon = project.start();
    wait_for(
        "the rule to be evaluated again",
        Duration::from_secs(30),
        || {
            let v = project.json(&["alerts"]);
            (v["alerts"][0]["state"] == "firing" && v["rules"][0]["evaluated_at"].is_string())
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.received().len(), 1, "{:?}", receiver.received());

    // Acknowledged, silenced, listed; every change audited.
    project.ok(&["alerts", "ack", "alertname=high_queue_depth"]);
    let history = project.json(&["alerts", "history"]);
    assert_eq!(history[0]["status"], "acknowledged", "{history:#}");
    assert_eq!(history[0]["actor"], "admin");
    let out = project.ok(&[
        "silence",
        "add",
        "queue=mail",
        "--for",
        "2h",
        "--comment",
        "migration",
    ]);
    assert!(out.contains("queue=\"mail\""), "{out}");
    let silences = project.json(&["silence", "list"]);
    let id = silences[0]["id"].as_str().unwrap().to_string();
    assert_eq!(silences[0]["comment"], "migration");
    project.ok(&["silence", "expire", &id]);
    assert_eq!(project.json(&["silence", "list"]), serde_json::json!([]));
    // Planned ahead: listed from now, muting from its start.
    let planned = project.json(&[
        "silence",
        "add",
        "queue=jobs",
        "--start",
        "2099-01-01T02:00:00Z",
        "--for",
        "4h",
        "--comment",
        "failover drill",
    ]);
    let at = |k: &str| {
        planned[k]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert_eq!(
        at("starts_at"),
        "2099-01-01T02:00:00Z".parse().unwrap(),
        "{planned:#}"
    );
    assert_eq!(
        at("ends_at"),
        "2099-01-01T06:00:00Z".parse().unwrap(),
        "{planned:#}"
    );
    let id = planned["id"].as_str().unwrap().to_string();
    assert_eq!(project.json(&["silence", "list"])[0]["id"], id.as_str());
    project.ok(&["silence", "expire", &id]);
    let bad = project.run(&[
        "silence",
        "add",
        "queue=x",
        "--start",
        "tomorrow",
        "--comment",
        "x",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
    let bad = project.run(&["silence", "add", "queue", "--comment", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a matcher"));
    let audit = project.json(&["audit"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for a in ["alert.ack", "silence.add", "silence.expire"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }

    // Below the recovery threshold: resolved, once.
    depth.store(50, Ordering::SeqCst);
    let resolved = wait_for("the resolved notification", Duration::from_secs(60), || {
        receiver
            .received()
            .into_iter()
            .find(|r| r.body["status"] == "resolved")
    });
    assert_eq!(resolved.body["alerts"][0]["status"], "resolved");
    let history = project.json(&["alerts", "history", "--rule", "high_queue_depth"]);
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["resolved", "acknowledged", "fired"]);
    let keys: Vec<String> = receiver.received().into_iter().map(|r| r.key).collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");

    // A test notification goes out at once; a channel that does not exist is named.
    project.ok(&["alerts", "test", "hook"]);
    let last = receiver.received().pop().unwrap();
    assert_eq!(last.body["alerts"][0]["labels"]["alertname"], "SlipwayTest");
    let bad = project.run(&["alerts", "test", "hooks"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("no channel `hooks`") && stderr.contains("hook"),
        "{stderr}"
    );
    drop(daemon);
}

/// `kill -9` of the control plane at ten points around a notification (before the scrape
/// sees the breach, between deciding and sending, during the send, after it): after each
/// restart the notification arrives; across all ten, each is decided once, and the receiver
/// sees a key twice at most when the kill came between its delivery and its recording.
#[test]
fn kill_9_at_ten_points_around_a_notification_loses_none() {
    const ROUNDS: usize = 10;
    let high = Arc::new(AtomicU32::new(u32::MAX));
    let h = high.clone();
    let exporter = Exporter::start(move |_| {
        let hot = h.load(Ordering::SeqCst);
        let mut page = String::from("# TYPE queue_depth gauge\n");
        for k in 0..ROUNDS as u32 {
            let v = if hot != u32::MAX && k <= hot { 150 } else { 10 };
            page.push_str(&format!("queue_depth{{queue=\"q{k}\"}} {v}\n"));
        }
        page
    });
    let receiver = Receiver::start();
    let mut toml = format!(
        r#"
[project]
name = "crashing"

[services.worker]
kind = "worker"
start = "slipway-sample worker"

[metrics]
interval = "1s"
targets = [{{ name = "app", url = "{}" }}]

[alerting]
builtin = false

[channels.hook]
type = "webhook"
url = "{}/hook"
"#,
        exporter.url, receiver.base
    );
    // One rule per round, so each round's notification is its group's first (P1: at once).
    for k in 0..ROUNDS {
        toml.push_str(&format!(
            "\n[alerts.q{k}]\nexpr = 'queue_depth{{queue=\"q{k}\"}} > 100'\nseverity = \"P1\"\nchannels = [\"hook\"]\n"
        ));
    }
    let project = Project::new(&toml);
    let mut daemon = project.start();
    let mut seed: u64 = 0x0000_a1e7_5eed;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 2500);
        high.store(round as u32, Ordering::SeqCst);
        std::thread::sleep(delay);
        daemon.kill();
        daemon = project.start();
        let rule = format!("q{round}");
        wait_for(
            &format!("round {round}'s notification (killed {delay:?} after the breach)"),
            Duration::from_secs(30),
            || {
                receiver
                    .received()
                    .iter()
                    .any(|r| r.body["alerts"][0]["labels"]["alertname"] == rule.as_str())
                    .then_some(())
            },
        );
    }
    let keys: Vec<String> = receiver.received().into_iter().map(|r| r.key).collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    eprintln!(
        "{} notifications received, {} distinct, after {ROUNDS} kills",
        keys.len(),
        unique.len()
    );
    assert_eq!(unique.len(), ROUNDS, "{keys:?}");
    assert!(keys.len() - unique.len() <= ROUNDS, "{keys:?}");
    // What the control plane recorded: each round decided once, all sent.
    let view = project.json(&["alerts"]);
    let deliveries = view["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), ROUNDS, "{view:#}");
    assert!(deliveries.iter().all(|d| d["sent"].is_string()), "{view:#}");
    let firing = view["alerts"].as_array().unwrap();
    assert_eq!(firing.len(), ROUNDS);
    drop(daemon);
}

/// Slipway's own rules need no writing: a service that keeps crashing pages the channels that
/// take P2, with a summary that says what to run.
#[test]
fn a_crash_looping_service_raises_the_builtin_alert() {
    let receiver = Receiver::start();
    let project = Project::new(&format!(
        r#"
[project]
name = "crashy"

[services.flaky]
kind = "worker"
start = "sh -c 'sleep 0.2; exit 3'"
restart = {{ policy = "always", backoff = "100ms", max_backoff = "200ms", crashloop_restarts = 1000 }}

[metrics]
interval = "1s"

[channels.hook]
type = "webhook"
url = "{}/hook"
"#,
        receiver.base
    ));
    let _daemon = project.start_with_env(&[]);
    let got = wait_for("the crash-looping alert", Duration::from_secs(60), || {
        receiver
            .received()
            .into_iter()
            .find(|r| r.body["alerts"][0]["labels"]["alertname"] == "slipway_crash_looping")
    });
    let alert = &got.body["alerts"][0];
    assert_eq!(alert["labels"]["service"], "flaky");
    assert_eq!(alert["labels"]["severity"], "P2");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("flaky (local) restarted"), "{summary}");
    let rules = project.json(&["alerts"])["rules"].clone();
    assert!(
        rules
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "slipway_instance_down"
                && r["source"].as_str().unwrap().starts_with("built in")),
        "{rules:#}"
    );
}

/// An email channel end to end: STARTTLS to a real SMTP server (aiosmtpd) whose certificate
/// comes from the project's own CA file, logged in with a password from a secret, the firing
/// and resolved messages in one thread.
#[test]
fn an_email_channel_mails_through_a_real_smtp_server() {
    let depth = Arc::new(AtomicU32::new(150));
    let d = depth.clone();
    let exporter = Exporter::start(move |_| {
        format!(
            "# TYPE queue_depth gauge\nqueue_depth{{queue=\"jobs\"}} {}\n",
            d.load(Ordering::SeqCst)
        )
    });
    let mail = tempfile::tempdir().unwrap();
    let smtp = slipway_metrics_testkit::Smtp::start(mail.path());
    let project = Project::new(&format!(
        r#"
[project]
name = "mailing"

[services.worker]
kind = "worker"
start = "slipway-sample worker"

[secrets]
SMTP_PASSWORD = "the relay's password"

[metrics]
interval = "1s"
targets = [{{ name = "app", url = "{exporter}" }}]

[alerting]
builtin = false

[alerting.P2]
group_interval = "1s"                   # the resolved message at once, not a minute later

[alerts.high_queue_depth]
expr = 'queue_depth > 100'
for = "1s"
severity = "P2"
channels = ["oncall"]
summary = "{{{{ $labels.queue }}}} queue at {{{{ $value }}}}"

[channels.oncall]
type = "email"
smtp = "localhost:{port}"
user = "{user}"
secret = "SMTP_PASSWORD"
ca = "relay-ca.pem"
from = "Slipway <alerts@example.com>"
to = ["oncall@example.com"]
"#,
        exporter = exporter.url,
        port = smtp.port,
        user = smtp.user,
    ));
    std::fs::write(project.dir.path().join("relay-ca.pem"), &smtp.cert_pem).unwrap();
    project.ok(&["validate"]);
    let daemon = project.start_with_env(&[("SMTP_PASSWORD", &smtp.password)]);
    let first = wait_for("the email", Duration::from_secs(30), || {
        smtp.received().into_iter().next()
    });
    assert_eq!(first["tls"], true);
    assert_eq!(first["auth_user"], smtp.user.as_str());
    assert_eq!(first["rcpt_tos"], serde_json::json!(["oncall@example.com"]));
    let subject = first["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("[FIRING:1] P2 high_queue_depth"),
        "{subject}"
    );
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains("jobs queue at 150")
    );

    depth.store(10, Ordering::SeqCst);
    let resolved = wait_for("the resolved email", Duration::from_secs(30), || {
        smtp.received().into_iter().nth(1)
    });
    assert!(
        resolved["subject"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED]")
    );
    assert_eq!(resolved["references"], first["references"]);
    // The password is in no output of the control plane.
    drop(daemon);
    for entry in std::fs::read_dir(project.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap();
            assert!(!log.contains(&smtp.password), "{}", path.display());
        }
    }
}
