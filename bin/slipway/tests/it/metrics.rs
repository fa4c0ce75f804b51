//! Metrics end to end: Slipway scraping beside a real Prometheus on the same targets, the
//! query API as Grafana and `promtool` use it, crashes, retention and memory, bad input.

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use slipway_metrics_testkit::{
    self as testkit, Answer, Exporter, Prometheus, QueryApi, Tolerance, compare,
};

use crate::support::{Daemon, Project, wait_for};

/// A project with no web service (so no proxy series) scraping `targets` every second.
fn scraping(targets: &[(&str, &str)], extra: &str) -> Project {
    let list: Vec<String> = targets
        .iter()
        .map(|(name, url)| format!("{{ name = \"{name}\", url = \"{url}\" }}"))
        .collect();
    Project::new(&format!(
        r#"
[project]
name = "metrics"

[services.worker]
kind = "worker"
start = "slipway-sample worker"

[metrics]
interval = "1s"
targets = [{}]
{extra}
"#,
        list.join(", ")
    ))
}

fn api(daemon: &Daemon) -> (String, String) {
    (daemon.url(""), format!("Bearer {}", daemon.token()))
}

fn slipway_api<'a>(base: &'a str, auth: &str) -> QueryApi<'a> {
    QueryApi {
        base,
        headers: vec![("Authorization", auth.to_string())],
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Samples of `expr` (an instant vector selector) in the last `secs` seconds at `t`.
fn samples_in(api: &QueryApi<'_>, expr: &str, secs: u32, t: i64) -> Vec<(i64, f64)> {
    match api.instant(&format!("{expr}[{secs}s]"), t) {
        Answer::Series(m) => m.into_values().next().unwrap_or_default(),
        Answer::Scalar(_) => Vec::new(),
    }
}

/// Counters that grow at constant rates, constant gauges, a histogram whose buckets grow at
/// constant rates, an info series: what two scrapers see alike whatever their timing.
fn steady_page(e: f64) -> String {
    let mut s = String::new();
    s.push_str("# HELP test_requests_total Requests.\n# TYPE test_requests_total counter\n");
    for (route, status, rate) in [
        ("/", "200", 10.0),
        ("/", "500", 0.5),
        ("/api", "200", 4.0),
        ("/api", "500", 1.0),
    ] {
        s.push_str(&format!(
            "test_requests_total{{route=\"{route}\",status=\"{status}\"}} {}\n",
            rate * e
        ));
    }
    s.push_str("# TYPE test_temperature gauge\n");
    for (room, v) in [("a", 21.5), ("b", 18.0), ("c", 25.25)] {
        s.push_str(&format!("test_temperature{{room=\"{room}\"}} {v}\n"));
    }
    s.push_str("# TYPE test_duration_seconds histogram\n");
    for (le, rate) in [("0.1", 20.0), ("0.5", 50.0), ("1", 58.0), ("+Inf", 60.0)] {
        s.push_str(&format!(
            "test_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
            rate * e
        ));
    }
    s.push_str(&format!(
        "test_duration_seconds_sum {}\ntest_duration_seconds_count {}\n",
        15.0 * e,
        60.0 * e
    ));
    s.push_str("# TYPE test_info gauge\ntest_info{version=\"1.2.3\",room=\"a\"} 1\n");
    s
}

/// Expressions of every family, and how close the two answers must be: exact where the
/// inputs are constant, within 2% where rates meet scrape timing (10% for `irate`, which
/// divides by one scrape interval).
const EXPRESSIONS: &[(&str, f64)] = &[
    (r#"up{job="exp"}"#, 0.0),
    (r#"scrape_samples_scraped{job="exp"}"#, 0.0),
    ("test_temperature", 0.0),
    (r#"test_temperature{room="a"}"#, 0.0),
    (r#"test_temperature{room!="a"}"#, 0.0),
    (r#"test_temperature{room=~"a|b"}"#, 0.0),
    (r#"test_temperature{room!~"a"}"#, 0.0),
    ("test_temperature offset 5s", 0.0),
    ("rate(test_requests_total[10s])", 0.02),
    ("irate(test_requests_total[10s])", 0.10),
    ("increase(test_requests_total[10s])", 0.02),
    ("delta(test_temperature[10s])", 0.0),
    ("avg_over_time(test_temperature[10s])", 0.0),
    ("max_over_time(test_temperature[10s])", 0.0),
    ("min_over_time(test_temperature[10s])", 0.0),
    ("quantile_over_time(0.5, test_temperature[10s])", 0.0),
    ("sum by (status) (rate(test_requests_total[10s]))", 0.02),
    ("sum without (route) (rate(test_requests_total[10s]))", 0.02),
    ("avg(test_temperature)", 0.0),
    ("min(test_temperature)", 0.0),
    ("max by (job) (test_temperature)", 0.0),
    ("count(test_temperature)", 0.0),
    ("topk(2, test_temperature)", 0.0),
    ("bottomk(1, test_temperature)", 0.0),
    ("quantile(0.5, test_temperature)", 0.0),
    (
        "histogram_quantile(0.9, sum by (le) (rate(test_duration_seconds_bucket[10s])))",
        0.02,
    ),
    (
        "histogram_quantile(0.3, rate(test_duration_seconds_bucket[10s]))",
        0.02,
    ),
    (
        "rate(test_duration_seconds_sum[10s]) / rate(test_duration_seconds_count[10s])",
        0.02,
    ),
    (
        r#"sum(rate(test_requests_total{status=~"5.."}[10s])) / sum(rate(test_requests_total[10s]))"#,
        0.02,
    ),
    (
        r#"rate(test_requests_total{status="500"}[10s]) / ignoring(status) rate(test_requests_total{status="200"}[10s])"#,
        0.02,
    ),
    (
        "rate(test_requests_total[10s]) / ignoring(status) group_left sum without (status) (rate(test_requests_total[10s]))",
        0.02,
    ),
    (
        "test_temperature * on(room) group_left(version) test_info",
        0.0,
    ),
    ("test_temperature > 20", 0.0),
    ("test_temperature > bool 20", 0.0),
    ("absent(nonexistent_metric)", 0.0),
    (r#"absent(test_temperature{room="z"})"#, 0.0),
    ("clamp_max(test_temperature, 20)", 0.0),
    ("clamp_min(test_temperature, 20)", 0.0),
    ("clamp(test_temperature, 19, 22)", 0.0),
    ("time()", 0.0),
    ("scalar(sum(test_temperature))", 0.0),
    ("abs(-test_temperature) + sqrt(test_temperature)", 0.0),
    (
        r#"label_replace(test_temperature, "where", "room-$1", "room", "(.*)")"#,
        0.0,
    ),
    ("2 * test_temperature + 1", 0.0),
];

const RANGES: &[(&str, f64)] = &[
    ("rate(test_requests_total[10s])", 0.02),
    ("sum by (status) (rate(test_requests_total[10s]))", 0.02),
    (
        "histogram_quantile(0.9, sum by (le) (rate(test_duration_seconds_bucket[10s])))",
        0.02,
    ),
    ("test_temperature", 0.0),
    ("max_over_time(test_temperature[5s])", 0.0),
    (r#"up{job="exp"}"#, 0.0),
];

fn tolerance(relative: f64) -> Tolerance {
    if relative == 0.0 {
        Tolerance::EXACT
    } else {
        Tolerance {
            relative,
            absolute: 1e-9,
            same_times: true,
        }
    }
}

fn json(reply: (u16, String)) -> (u16, Json) {
    let v = serde_json::from_str(&reply.1).unwrap_or_else(|e| panic!("{e}: {}", reply.1));
    (reply.0, v)
}

#[test]
fn a_real_prometheus_on_the_same_targets_agrees_and_grafana_and_promtool_work() {
    let exporter = Exporter::start(steady_page);
    let project = scraping(&[("exp", &exporter.url)], "");
    let daemon = project.start();
    let host = exporter
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let prometheus = Prometheus::start(
        project.dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: exp\n    static_configs:\n      - targets: ['{host}']\n"
        ),
        &[],
    );
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let theirs = QueryApi {
        base: &prometheus.base,
        headers: Vec::new(),
    };
    // Both have 25 s of scrapes.
    wait_for(
        "25 s of scrapes on both sides",
        Duration::from_secs(90),
        || {
            let t = now_ms();
            (samples_in(&ours, r#"up{job="exp"}"#, 30, t).len() >= 25
                && samples_in(&theirs, r#"up{job="exp"}"#, 30, t).len() >= 25)
                .then_some(())
        },
    );
    let t = now_ms() - 2_000;
    let mut failures = Vec::new();
    let mut points = 0;
    for (q, rel) in EXPRESSIONS {
        let a = ours.instant(q, t);
        let b = theirs.instant(q, t);
        if let Answer::Series(m) = &b {
            points += m.values().map(Vec::len).sum::<usize>();
        }
        if let Err(e) = compare(q, &a, &b, tolerance(*rel)) {
            failures.push(e);
        }
    }
    for (q, rel) in RANGES {
        let a = ours.range(q, t - 10_000, t, 1_000);
        let b = theirs.range(q, t - 10_000, t, 1_000);
        if let Answer::Series(m) = &b {
            points += m.values().map(Vec::len).sum::<usize>();
        }
        if let Err(e) = compare(&format!("range {q}"), &a, &b, tolerance(*rel)) {
            failures.push(e);
        }
    }
    eprintln!(
        "{} instant and {} range queries, {points} points from Prometheus: {} differ",
        EXPRESSIONS.len(),
        RANGES.len(),
        failures.len()
    );
    assert!(points > 150, "Prometheus answered only {points} points");
    assert!(
        failures.is_empty(),
        "answers differ from Prometheus':\n{}",
        failures.join("\n")
    );

    // Grafana's data-source health check and the metadata it reads, answered as Prometheus
    // answers them.
    let ts = format!("{}.{:03}", t / 1000, t % 1000);
    let same = |path: &str| {
        let (sa, a) = json(ours.raw(path));
        let (sb, b) = json(theirs.raw(path));
        assert_eq!((sa, &a), (sb, &b), "{path}");
        a
    };
    let two = same(&format!("/api/v1/query?query=1%2B1&time={ts}"));
    assert_eq!(two["data"]["result"][1], "2");
    let window = format!("start={}&end={ts}", t / 1000 - 20);
    let labels = same(&format!(
        "/api/v1/labels?match[]={}&{window}",
        testkit::encode(r#"{job="exp"}"#)
    ));
    assert!(
        labels["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "room"),
        "{labels}"
    );
    same(&format!(
        "/api/v1/series?match[]={}&{window}",
        testkit::encode("test_temperature")
    ));
    same(&format!(
        "/api/v1/series?match[]={}&match[]=test_info&{window}",
        testkit::encode(r#"up{job="exp"}"#)
    ));
    same(&format!(
        "/api/v1/label/room/values?match[]=test_temperature&{window}"
    ));
    same(&format!(
        "/api/v1/label/__name__/values?match[]={}&{window}",
        testkit::encode(r#"{job="exp"}"#)
    ));
    // Bad queries: the same error type, at the same position.
    for q in ["foo bar", "sum(rate(x[5m])", "rate(x)", "x +"] {
        let (sa, a) = json(ours.raw(&format!(
            "/api/v1/query?query={}&time={ts}",
            testkit::encode(q)
        )));
        let (sb, b) = json(theirs.raw(&format!(
            "/api/v1/query?query={}&time={ts}",
            testkit::encode(q)
        )));
        assert_eq!(
            (sa, &a["status"], &a["errorType"]),
            (sb, &b["status"], &b["errorType"]),
            "{q}: {a} vs {b}"
        );
        let position = |v: &Json| {
            v["error"]
                .as_str()
                .unwrap_or("")
                .split(": ")
                .next()
                .unwrap_or("")
                .to_string()
        };
        if position(&b).contains(':') {
            assert_eq!(position(&a), position(&b), "{q}: {a} vs {b}");
        }
    }
    let (status, build) = json(ours.raw("/api/v1/status/buildinfo"));
    assert_eq!((status, &build["status"]), (200, &Json::from("success")));

    // `promtool query`, the token in the URL (Basic authentication), prints what it prints
    // for Prometheus.
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let token = daemon.token();
    let promtool = |server: &str, q: &str| {
        let out = std::process::Command::new("promtool")
            .args(["query", "instant", &format!("--time={ts}"), server, q])
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {server}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let from_slipway = promtool(
        &format!("http://slipway:{token}@{host}"),
        r#"up{job="exp"}"#,
    );
    let from_prometheus = promtool(&prometheus.base, "up");
    assert!(
        from_slipway.contains(r#"job="exp"} => 1"#),
        "{from_slipway}"
    );
    assert_eq!(from_slipway, from_prometheus);
    // Without the token, nothing.
    let (status, _) = testkit::get(&format!("{base}/api/v1/query?query=up"), &[]).unwrap();
    assert_eq!(status, 401);
}

#[test]
fn kill_9_while_scraping_loses_at_most_5_seconds() {
    let exporter = Exporter::start(steady_page);
    let project = scraping(&[("exp", &exporter.url)], "");
    let mut daemon = project.start();
    let (base, auth) = api(&daemon);
    let before = slipway_api(&base, &auth);
    wait_for("ten scrapes", Duration::from_secs(60), || {
        (samples_in(&before, r#"up{job="exp"}"#, 60, now_ms()).len() >= 10).then_some(())
    });
    let scraped = samples_in(&before, r#"up{job="exp"}"#, 60, now_ms()).len();
    let killed = now_ms();
    daemon.kill();
    let daemon = project.start();
    let (base, auth) = api(&daemon);
    let after = slipway_api(&base, &auth);
    let kept = samples_in(&after, r#"up{job="exp"}"#, 120, killed);
    let newest = kept.last().map_or(0, |p| p.0);
    eprintln!(
        "{} samples kept of the {} seen before the kill (+ those after); the newest {} ms before it",
        kept.len(),
        scraped,
        killed - newest
    );
    assert!(
        kept.len() + 5 >= scraped,
        "{} kept, {scraped} seen",
        kept.len()
    );
    assert!(
        killed - newest <= 5_000,
        "lost {} ms of samples",
        killed - newest
    );
    // And scraping goes on.
    wait_for("scrapes after the restart", Duration::from_secs(30), || {
        samples_in(&after, r#"up{job="exp"}"#, 120, now_ms())
            .last()
            .is_some_and(|p| p.0 > killed)
            .then_some(())
    });
}

#[test]
fn bad_input_gets_clear_errors_and_breaks_nothing_else() {
    let good = Exporter::start(steady_page);
    let garbage = Exporter::start(|_| "<html>this is not metrics</html>\n".to_string());
    let project = scraping(&[("good", &good.url), ("garbage", &garbage.url)], "");
    let daemon = project.start();
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let targets = wait_for("both targets scraped", Duration::from_secs(30), || {
        let (_, v) = json(ours.raw("/api/v1/targets"));
        let list: Vec<Json> = v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] != "slipway-proxy")
            .cloned()
            .collect();
        (list.len() == 2 && list.iter().all(|t| t["health"] != "unknown")).then_some(list)
    });
    let by_job = |job: &str| {
        targets
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .unwrap()
            .clone()
    };
    assert_eq!(by_job("good")["health"], "up");
    let bad = by_job("garbage");
    assert_eq!(bad["health"], "down");
    let error = bad["lastError"].as_str().unwrap();
    assert!(
        error.contains("cannot parse") && error.contains("line 1, column 1"),
        "{error}"
    );
    // `up` says it too, and the good target's series are all there.
    let t = now_ms();
    let Answer::Series(up) = ours.instant("up", t) else {
        panic!()
    };
    let values: Vec<(String, f64)> = up.into_iter().map(|(k, v)| (k, v[0].1)).collect();
    assert!(
        values
            .iter()
            .any(|(k, v)| k.contains("garbage") && *v == 0.0),
        "{values:?}"
    );
    assert!(
        values
            .iter()
            .any(|(k, v)| k.contains("\"good\"") && *v == 1.0),
        "{values:?}"
    );
    let Answer::Series(temps) = ours.instant("test_temperature", t) else {
        panic!()
    };
    assert_eq!(temps.len(), 3);

    // A query that does not parse: 400 bad_data, where and what.
    let (status, v) = json(ours.raw(&format!(
        "/api/v1/query?query={}",
        testkit::encode("sum(rate(x[5m])) by")
    )));
    assert_eq!(
        (status, &v["errorType"]),
        (400, &Json::from("bad_data")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("1:20: parse error: "),
        "{v}"
    );
    let (status, v) = json(ours.raw("/api/v1/query_range?query=up&start=1&end=2"));
    assert_eq!(
        (status, &v["errorType"]),
        (400, &Json::from("bad_data")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("step"), "{v}");
    let (status, v) = json(ours.raw("/api/v1/query?query=up&time=yesterday"));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"time\""), "{v}");

    // The CLI shows where.
    let out = project.run(&["metrics", "query", "foo bar"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("  foo bar\n      ^\n") && stderr.contains("unexpected identifier \"bar\""),
        "{stderr}"
    );
    // And reads well when all is fine.
    let table = project.ok(&["metrics", "query", "test_temperature"]);
    assert!(
        table.contains("SERIES") && table.contains("21.5"),
        "{table}"
    );
    // A rate needs two scrapes in its window.
    let range = wait_for("a rate over the range", Duration::from_secs(30), || {
        let out = project.ok(&[
            "metrics",
            "query",
            "sum(rate(test_requests_total[5s]))",
            "--range",
            "20s",
            "--step",
            "1s",
        ]);
        out.contains("15.5").then_some(out)
    });
    assert!(range.contains("OVER THE RANGE"), "{range}");
    let targets = project.ok(&["metrics", "targets"]);
    assert!(
        targets.contains("garbage") && targets.contains("down") && targets.contains("cannot parse"),
        "{targets}"
    );
    let series = project.json(&["metrics", "series", "test_temperature"]);
    assert_eq!(series["data"].as_array().unwrap().len(), 3, "{series}");
}

#[test]
fn rule_files_are_checked_where_they_are_and_recording_rules_run() {
    let exporter = Exporter::start(steady_page);
    let project = scraping(
        &[("exp", &exporter.url)],
        "rule_files = [\"rules/*.yml\"]\n\n[[metrics.rules]]\nrecord = \"room:temperature:max\"\nexpr = \"max(test_temperature)\"\ninterval = \"1s\"\n",
    );
    let rules = project.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("app.yml"),
        "groups:\n  - name: app\n    interval: 1s\n    rules:\n      - record: job:requests:rate10s\n        expr: sum by (job) (rate(test_requests_total[10s]))\n      - alert: Hot\n        expr: test_temperature > 25\n        for: 1m\n",
    )
    .unwrap();
    // Broken, `validate` says where.
    std::fs::write(
        rules.join("broken.yml"),
        "groups:\n  - name: broken\n    rules:\n      - record: x:y\n        expr: rate(x[5m]) +\n",
    )
    .unwrap();
    let out = project.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--> rules/broken.yml:5:28"), "{stderr}");
    assert!(
        stderr.contains("invalid PromQL: unexpected end of input"),
        "{stderr}"
    );
    std::fs::remove_file(rules.join("broken.yml")).unwrap();
    project.ok(&["validate"]);

    let daemon = project.start();
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let (rate, max) = wait_for("both rules' series", Duration::from_secs(60), || {
        let t = now_ms();
        let Answer::Series(r) = ours.instant("job:requests:rate10s", t) else {
            return None;
        };
        let Answer::Series(m) = ours.instant("room:temperature:max", t) else {
            return None;
        };
        let rate = r.values().next()?.first()?.1;
        let max = m.values().next()?.first()?.1;
        // Once the rule's window holds 10 s of scrapes (before, the series starts inside the
        // window and the rate is not extrapolated to its start).
        ((rate - 15.5).abs() < 0.3).then_some((rate, max))
    });
    assert!((rate - 15.5).abs() < 0.3, "{rate}");
    assert_eq!(max, 25.25);
}

/// RSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Ten minutes of 2 000 constant series scraped every second: memory stays flat once the
/// retention window (2 minutes) is full, and samples older than it are deleted.
#[test]
fn memory_stays_flat_and_retention_deletes_old_data_over_ten_minutes() {
    let exporter = Exporter::start(|e| {
        let mut s = String::from("# TYPE test_load gauge\n");
        let tick = e.floor();
        for i in 0..2000 {
            s.push_str(&format!(
                "test_load{{series=\"{i}\",pod=\"pod-{}\"}} {}\n",
                i % 50,
                (tick + f64::from(i)) % 100.0
            ));
        }
        s
    });
    let project = scraping(&[("load", &exporter.url)], "retention = \"2m\"");
    let daemon = project.start();
    let pid = daemon.info().pid;
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let started = Instant::now();
    let mut early: Vec<u64> = Vec::new();
    let mut late: Vec<u64> = Vec::new();
    while started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_secs(10));
        let at = started.elapsed();
        let r = rss(pid);
        if at > Duration::from_secs(180) && at <= Duration::from_secs(300) {
            early.push(r);
        } else if at > Duration::from_secs(480) {
            late.push(r);
        }
    }
    let early_max = *early.iter().max().unwrap();
    let late_max = *late.iter().max().unwrap();
    let t = now_ms();
    let kept = samples_in(&ours, r#"test_load{series="7"}"#, 600, t);
    let oldest = kept.first().map_or(0, |p| t - p.0);
    let (_, self_metrics) =
        testkit::get(&format!("{base}/metrics"), &[("Authorization", &auth)]).unwrap();
    let head_series = self_metrics
        .lines()
        .find_map(|l| l.strip_prefix("slipway_tsdb_head_series "))
        .unwrap_or("0")
        .to_string();
    eprintln!(
        "RSS minutes 3–5: max {:.1} MiB; minutes 8–10: max {:.1} MiB; {} samples of a series kept, the oldest {} s old; head series {head_series}",
        early_max as f64 / 1048576.0,
        late_max as f64 / 1048576.0,
        kept.len(),
        oldest / 1000
    );
    assert!(
        late_max <= early_max + early_max / 10 + 4 * 1024 * 1024,
        "memory grew: {early_max} → {late_max} bytes"
    );
    // Retention 2 minutes: what is older went with its block (blocks of a minute, the head
    // holding up to a block and a half beyond).
    assert!(
        oldest <= 5 * 60_000,
        "samples {oldest} ms old are still there"
    );
    assert!(kept.len() >= 100, "only {} samples", kept.len());
}

#[test]
fn remote_write_ships_to_a_real_prometheus_and_the_prometheus_backend_answers_for_slipway() {
    let exporter = Exporter::start(steady_page);
    let dir = tempfile::tempdir().unwrap();
    // Prometheus scrapes the exporter too, as its own job (series only it has), and receives
    // remote write.
    let direct = exporter
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let prometheus = Prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: direct\n    static_configs:\n      - targets: ['{direct}']\n"
        ),
        &["--web.enable-remote-write-receiver"],
    );
    let theirs = QueryApi {
        base: &prometheus.base,
        headers: vec![],
    };

    let project = scraping(
        &[("exp", &exporter.url)],
        &format!("remote_write = \"{}/api/v1/write\"\n", prometheus.base),
    );
    let daemon = project.start();
    // Every scraped series arrives, with the labels Slipway gave it.
    let arrived = wait_for(
        "samples remote-written to Prometheus",
        Duration::from_secs(30),
        || match theirs.instant(r#"test_temperature{job="exp"}"#, now_ms()) {
            Answer::Series(m) if m.len() == 3 => Some(m),
            _ => None,
        },
    );
    let instance = exporter
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    assert!(
        arrived
            .keys()
            .all(|k| k.contains(&format!("instance=\"{instance}\""))),
        "{arrived:?}"
    );
    let Answer::Series(ups) = theirs.instant(r#"up{job="exp"}"#, now_ms()) else {
        panic!()
    };
    assert_eq!(ups.len(), 1);
    // Slipway's own series are shipped too, and the writer's counters say all went out.
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let exposition = ours.raw("/metrics").1;
    assert!(
        exposition.contains("slipway_remote_write_samples_sent_total"),
        "{exposition}"
    );
    let sent = wait_for("sent counted", Duration::from_secs(10), || {
        exposition_value(
            &ours.raw("/metrics").1,
            "slipway_remote_write_samples_sent_total",
        )
        .filter(|v| *v > 0.0)
    });
    assert!(sent > 0.0);
    // And Prometheus' counts match the embedded store's for the same window.
    let t = now_ms() - 3_000;
    let count = r#"count_over_time(test_temperature{room="a"}[20s])"#;
    let (Answer::Series(a), Answer::Series(b)) = (ours.instant(count, t), theirs.instant(count, t))
    else {
        panic!()
    };
    let n =
        |m: &std::collections::BTreeMap<String, Vec<(i64, f64)>>| m.values().next().map(|v| v[0].1);
    assert_eq!(n(&a), n(&b), "the same samples on both sides");

    // `backend = { prometheus }`: Slipway's API and CLI answer from Prometheus.
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(
        project.file(),
        toml.replace(
            "remote_write = ",
            &format!(
                "backend = {{ prometheus = \"{}\" }}\nremote_write = ",
                prometheus.base
            ),
        ),
    )
    .unwrap();
    project.ok(&["up"]);
    let answered = wait_for(
        "the Prometheus back-end answers",
        Duration::from_secs(30),
        || match ours.instant(r#"up{job="direct"}"#, now_ms()) {
            Answer::Series(m) if !m.is_empty() => Some(m),
            _ => None,
        },
    );
    assert_eq!(answered.values().next().unwrap()[0].1, 1.0);
    let table = project.ok(&["metrics", "query", "up{job=\"direct\"}"]);
    assert!(table.contains("direct") && table.contains('1'), "{table}");
    let names = project.json(&["metrics", "series", "test_temperature"]);
    assert_eq!(
        names["data"].as_array().unwrap().len(),
        6,
        "both jobs' series: {names}"
    );
    // A syntax error comes back as Prometheus said it, still a 400.
    let (status, v) = json(ours.raw(&format!(
        "/api/v1/query?query={}",
        testkit::encode("sum(up")
    )));
    assert_eq!(
        (status, &v["errorType"]),
        (400, &Json::from("bad_data")),
        "{v}"
    );
}

/// The value of an unlabelled series in a Prometheus text page.
fn exposition_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn one_job_may_list_several_urls_each_its_own_instance() {
    let (a, b) = (Exporter::start(steady_page), Exporter::start(steady_page));
    let project = Project::new(&format!(
        "[project]\nname = \"metrics\"\n\n[services.worker]\nkind = \"worker\"\nstart = \"slipway-sample worker\"\n\n\
         [metrics]\ninterval = \"1s\"\ntargets = [{{ name = \"pair\", urls = [\"{}\", \"{}\"], labels = {{ team = \"data\" }} }}]\n",
        a.url, b.url
    ));
    project.ok(&["validate"]);
    let daemon = project.start();
    let (base, auth) = api(&daemon);
    let ours = slipway_api(&base, &auth);
    let ups = wait_for(
        "both instances scraped",
        Duration::from_secs(30),
        || match ours.instant(r#"up{job="pair"} == 1"#, now_ms()) {
            Answer::Series(m) if m.len() == 2 => Some(m),
            _ => None,
        },
    );
    for url in [&a.url, &b.url] {
        let instance = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        assert!(
            ups.keys()
                .any(|k| k.contains(&format!("instance=\"{instance}\""))
                    && k.contains("team=\"data\"")),
            "{instance} in {ups:?}"
        );
    }
    let targets = project.ok(&["metrics", "targets"]);
    assert_eq!(targets.matches("pair").count(), 2, "{targets}");
}
