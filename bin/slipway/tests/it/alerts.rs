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
    let exporter = Exporter::start(move |_| {
        format!(
            "# TYPE queue_depth gauge\nqueue_depth{{queue=\"jobs\"}} {}\n",
            d.load(Ordering::SeqCst)
        )
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

    // Onset: the exporter says 150. Delivered within `for` (2 s) + a scrape (1 s) + 2 s.
    let onset = Instant::now();
    depth.store(150, Ordering::SeqCst);
    let first = wait_for("the notification", Duration::from_secs(15), || {
        receiver.received().into_iter().next()
    });
    let latency = first.at - onset;
    eprintln!("onset → delivered: {latency:?}");
    assert!(latency <= Duration::from_secs(5), "{latency:?}");
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
    drop(daemon);
}
