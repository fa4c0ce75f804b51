//! SLOs end to end: a healthy service whose requests the proxy's fault injection fails by
//! half, an availability
//! SLO with short burn windows; the error ratios are recorded on the embedded store, the page
//! alert fires on them and reaches a webhook, `slipway slo` shows the budget overspent, a
//! deploy is refused naming the SLO while `deploy --fix` goes in, the freeze lifts once the
//! budget is back, and `slo export` writes rules Prometheus accepts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slipway_metrics_testkit::Receiver;

use crate::support::{Project, wait_for};

#[test]
fn injected_errors_burn_the_budget_page_and_freeze_deploys_but_fixes() {
    let receiver = Receiver::start();
    let project = Project::new(&format!(
        r#"
[project]
name = "budget"

[services.web]
start = "slipway-sample web"
port = 0
health = {{ path = "/health", interval = "200ms" }}

[metrics]
interval = "1s"

[alerting]
builtin = false

[slos.web-availability]
service = "web"
objective = "99%"
window = "1m"
burn = [{{ long = "10s", short = "3s", factor = 2, alert = "page" }}]
channels = ["hook"]

[channels.hook]
type = "webhook"
url = "{}/hook"
"#,
        receiver.base
    ));
    project.ok(&["validate"]);
    let _daemon = project.start();
    let (_, port) = project.serving();
    let url = format!("http://127.0.0.1:{port}/");
    // Half the service's requests fail at the proxy.
    project.fault(
        "local",
        "web",
        Some(serde_json::json!({ "abort_percent": 50, "abort_status": 503 })),
    );
    // Requests until the page arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = slipway_metrics_testkit::get(&url, &[]);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let page = wait_for("the burn-rate page", Duration::from_secs(60), || {
        receiver
            .received()
            .into_iter()
            .find(|r| r.body["status"] == "firing")
    });
    let alert = &page.body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "slo_web_availability_page");
    assert_eq!(alert["labels"]["slo"], "web-availability");
    assert_eq!(alert["labels"]["environment"], "local");
    assert_eq!(alert["labels"]["severity"], "P1");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("SLO web-availability (local) burns its error budget fast"),
        "{summary}"
    );

    // The budget: half the requests fail against a 1% budget, so it is far overspent.
    let slo = wait_for(
        "the SLO's window to have data",
        Duration::from_secs(30),
        || {
            let v = project.json(&["slo"]);
            v[0]["budget_remaining"].is_number().then_some(v)
        },
    );
    let row = &slo[0];
    assert_eq!(row["slo"], "web-availability");
    assert_eq!(row["environment"], "local");
    let sli = row["sli"].as_f64().unwrap();
    assert!((0.2..0.8).contains(&sli), "{row}");
    assert!(row["budget_remaining"].as_f64().unwrap() < -10.0, "{row}");
    assert!(row["burn_rates"]["10s"].as_f64().unwrap() > 2.0, "{row}");
    let table = project.ok(&["slo"]);
    assert!(
        table.contains("web-availability") && table.contains("99% / 1m"),
        "{table}"
    );

    // The budget is spent: deploys are frozen but for fixes, named after the SLO.
    wait_for("the budget freeze", Duration::from_secs(30), || {
        let out = project.run(&["deploy", "-m", "a feature"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (!out.status.success() && err.contains("SLO `web-availability` has spent its error budget"))
            .then_some(())
    });
    // The cause goes away and its fix goes in through the freeze.
    project.fault("local", "web", None);
    let fixed = project.run(&["deploy", "--fix", "-m", "stop failing"]);
    assert!(
        fixed.status.success(),
        "{}",
        String::from_utf8_lossy(&fixed.stderr)
    );
    // Clean requests for a window: the budget comes back and the freeze lifts by itself.
    wait_for("the freeze to lift", Duration::from_secs(120), || {
        let audit = project.json(&["audit"]);
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "slo.unfreeze")
            .then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let audit = project.json(&["audit"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(actions.contains(&"slo.freeze"), "{actions:?}");
    project.ok(&["deploy", "-m", "a feature, at last"]);

    // The same rules for a Prometheus of one's own.
    let rules = project.ok(&["slo", "export", "--format", "prometheus"]);
    let file = project.dir.path().join("slo-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let checked = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let bad = project.run(&["slo", "export", "--format", "sloth"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--format prometheus"));
}
