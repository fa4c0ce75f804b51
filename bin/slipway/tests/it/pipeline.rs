//! Pipelines end to end, on a copy of `examples/pipeline` made a real git repository: a failing
//! test halts the run, staging then production with the `require` gate, the secret scan and its
//! allow-list, a smoke test failing on the preview, the git watcher, the status webhook, DORA.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Project, get, wait_for};

/// `examples/pipeline` in a temporary folder, with `edit` applied to its slipway.toml (tests
/// shorten the watch windows and, but for the watcher's test, turn the git watcher off so their
/// own commits start no runs), made a git repository with one commit on `main`.
fn example(edit: impl Fn(String) -> String) -> Project {
    let project = Project::new("");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline");
    copy(&source, project.dir.path());
    let toml = std::fs::read_to_string(project.file()).unwrap();
    // Short windows and a quick worker, so the tests take seconds.
    let toml = toml
        .replace("window = \"10s\"", "window = \"1s\"")
        .replace("watch = { repo = \".\", interval = \"5s\" }", "# WATCH")
        .replace(
            "start = \"slipway-sample worker\"",
            "start = \"slipway-sample worker\"\nhealth = { type = \"uptime\", start_period = \"200ms\" }",
        );
    std::fs::write(project.file(), edit(toml)).unwrap();
    git(project.dir.path(), &["init", "-q", "-b", "main"]);
    commit(&project, "first");
    project
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits everything; returns the sha.
fn commit(project: &Project, message: &str) -> String {
    git(project.dir.path(), &["add", "-A"]);
    git(project.dir.path(), &["commit", "-q", "-m", message]);
    git(project.dir.path(), &["rev-parse", "HEAD"])
}

/// `slipway --json [--env ENV] pipeline run ARGS`: exit status and the run it printed.
fn pipeline_run(project: &Project, env: &str, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["--json", "--env", env, "pipeline", "run"];
    all.extend_from_slice(args);
    let out = project.run(&all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no run printed ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

fn deployments(project: &Project) -> Vec<Value> {
    project
        .json(&["deployments", "--limit", "100"])
        .as_array()
        .unwrap()
        .clone()
}

fn step<'a>(run: &'a Value, path: &str) -> &'a Value {
    let parts: Vec<&str> = path.split('/').collect();
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == parts[0])
        .and_then(|s| {
            s["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["name"] == parts[1])
        })
        .and_then(|j| {
            j["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == parts[2])
        })
        .unwrap_or_else(|| panic!("no step {path} in {run:#}"))
}

fn web_url(project: &Project, env: &str) -> String {
    let status = project.json(&["--env", env, "status"]);
    let port = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap()["port"]
        .as_u64()
        .unwrap();
    format!("http://127.0.0.1:{port}/")
}

#[test]
fn a_failing_test_halts_the_run_and_nothing_is_deployed() {
    let project = example(|t| t);
    std::fs::write(
        project.dir.path().join("test.sh"),
        "#!/bin/sh\necho \"checking the cart\"\necho \"expected 3 items, got 2\" >&2\nexit 1\n",
    )
    .unwrap();
    commit(&project, "break the tests");
    let _daemon = project.start();
    wait_for("the first release", Duration::from_secs(30), || {
        deployments(&project)
            .first()
            .filter(|d| d["outcome"].is_string())
            .cloned()
    });
    let before = deployments(&project).len();
    let (ok, run) = pipeline_run(&project, "staging", &[]);
    assert!(!ok, "a failed run exits non-zero");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    assert_eq!(run["failed_step"], "test/test/unit tests");
    assert!(
        run["reason"].as_str().unwrap().contains("exit 1"),
        "{run:#}"
    );
    assert_eq!(step(&run, "build/build/compile")["status"], "succeeded");
    assert_eq!(step(&run, "build/build/compile")["exit_code"], 0, "{run:#}");
    let failed = step(&run, "test/test/unit tests");
    assert_eq!(failed["exit_code"], 1);
    assert!(
        failed["tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "expected 3 items, got 2"),
        "the failing step's last lines: {failed:#}"
    );
    assert_eq!(step(&run, "deploy/deploy/deploy")["status"], "skipped");
    assert!(run["deployment"].is_null());
    assert_eq!(deployments(&project).len(), before, "no deploy started");
    // The log has every line, tagged with its job and step.
    let logs = project.ok(&["pipeline", "logs", &run["run"].to_string()]);
    assert!(
        logs.contains("[test/unit tests] checking the cart"),
        "{logs}"
    );
}

/// `(path, JSON body)` of every POST a [`webhook_receiver`] got.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A tiny HTTP server that keeps the JSON bodies POSTed to it.
fn webhook_receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = got.clone();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            if let Ok(v) = serde_json::from_slice(&body) {
                keep.lock().unwrap().push((path, v));
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (format!("http://{addr}"), got)
}

#[test]
fn staging_then_production_with_the_require_gate_and_commit_statuses() {
    let (hook, received) = webhook_receiver();
    let project = example(|t| {
        t.replace(
            "# WATCH",
            &format!(
                "webhook = {{ url = \"{hook}/statuses/{{commit}}\", format = \"github-status\" }}"
            ),
        )
    });
    let sha = git(project.dir.path(), &["rev-parse", "HEAD"]);
    let _daemon = project.start();
    let (ok, staging) = pipeline_run(&project, "staging", &[]);
    assert!(ok, "{staging:#}");
    assert_eq!(staging["outcome"], "succeeded");
    assert_eq!(staging["commit"], sha);
    assert!(staging["failed_step"].is_null());
    assert!(staging["deployment"].is_i64(), "it deployed: {staging:#}");
    assert_eq!(step(&staging, "smoke/smoke/smoke")["status"], "succeeded");
    assert_eq!(
        step(&staging, "deploy/deploy/require")["status"],
        "succeeded"
    );
    let body = get(&web_url(&project, "staging"));
    assert_eq!(body["env"]["GREETING"], "hello from staging");
    // The release records the commit it was built from.
    let releases = project.json(&["releases"]);
    assert_eq!(releases[0]["version"], &sha[..12]);

    // Production, the same commit: the gate passes.
    let (ok, production) = pipeline_run(&project, "production", &["--ref", &sha]);
    assert!(ok, "{production:#}");
    assert_eq!(production["outcome"], "succeeded");
    assert!(
        step(&production, "deploy/deploy/require")["detail"]
            .as_str()
            .unwrap()
            .contains("staging"),
        "{production:#}"
    );
    let body = get(&web_url(&project, "production"));
    assert_eq!(body["env"]["GREETING"], "hello from production");

    // A commit never green in staging is refused in production.
    std::fs::write(project.dir.path().join("NOTES.md"), "a change\n").unwrap();
    let newer = commit(&project, "a change");
    let (ok, refused) = pipeline_run(&project, "production", &["--ref", &newer]);
    assert!(!ok);
    assert_eq!(refused["outcome"], "refused", "{refused:#}");
    assert_eq!(refused["failed_step"], "deploy/deploy/require");
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("no green run in staging"), "{reason}");
    assert!(reason.contains(&newer[..12]), "{reason}");
    assert!(refused["deployment"].is_null());

    // Commit statuses went to the webhook, GitHub-shaped, for each state of each run.
    let got = wait_for("the last commit status", Duration::from_secs(10), || {
        let got = received.lock().unwrap().clone();
        got.iter()
            .any(|(path, v)| path.ends_with(&newer) && v["state"] == "failure")
            .then_some(got)
    });
    let staging_success = got.iter().find(|(path, v)| {
        path == &format!("/statuses/{sha}")
            && v["context"] == "slipway/staging"
            && v["state"] == "success"
    });
    assert!(staging_success.is_some(), "{got:#?}");
    assert!(
        got.iter()
            .any(|(_, v)| v["state"] == "pending" && v["context"] == "slipway/production"),
        "{got:#?}"
    );
}

#[test]
fn a_planted_aws_key_fails_the_secret_scan_but_an_allowed_finding_does_not() {
    let project = example(|t| t);
    std::fs::create_dir_all(project.dir.path().join("src")).unwrap();
    std::fs::write(
        project.dir.path().join("src/config.py"),
        "import os\n\nAWS_ACCESS_KEY_ID = \"AKIAZ3MSJV4WPQ7TGUXA\"\nREGION = \"eu-west-1\"\n",
    )
    .unwrap();
    commit(&project, "configure the uploader");
    let _daemon = project.start();
    let (ok, run) = pipeline_run(&project, "staging", &[]);
    assert!(!ok);
    assert_eq!(run["outcome"], "failed", "{run:#}");
    assert_eq!(run["failed_step"], "scan/scan/secret-scan");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("src/config.py:3"), "{reason}");
    assert!(reason.contains("aws-access-key-id"), "{reason}");
    assert!(
        !reason.contains("AKIAZ3MSJV4WPQ7TGUXA"),
        "the secret is never printed: {reason}"
    );
    // docs/fake-credentials.md holds AWS's documented example key; the allow-list accepts it.
    let tail = step(&run, "scan/scan/secret-scan")["tail"].to_string();
    assert!(!tail.contains("fake-credentials"), "{tail}");
    assert_eq!(step(&run, "deploy/deploy/deploy")["status"], "skipped");

    // Without the planted key the scan passes, though the documented example is still there.
    std::fs::remove_file(project.dir.path().join("src/config.py")).unwrap();
    commit(&project, "drop the key");
    let (ok, run) = pipeline_run(&project, "staging", &["--no-wait"]);
    assert!(ok);
    let id = run["run"].to_string();
    let done = wait_for("the second run", Duration::from_secs(60), || {
        let r = project.json(&["pipeline", "status", &id]);
        r["outcome"].is_string().then_some(r)
    });
    assert_eq!(
        step(&done, "scan/scan/secret-scan")["status"],
        "succeeded",
        "{done:#}"
    );
    let logs = project.ok(&["pipeline", "logs", &id]);
    assert!(
        logs.contains("1 finding(s) allowed by .slipway-secrets-allow"),
        "{logs}"
    );
}

#[test]
fn a_smoke_test_failing_on_the_preview_leaves_traffic_untouched() {
    let project = example(|t| t);
    let _daemon = project.start();
    let (ok, first) = pipeline_run(&project, "staging", &[]);
    assert!(ok, "{first:#}");
    let url = web_url(&project, "staging");
    assert_eq!(get(&url)["version"], "v1");
    let before = project.json(&["status"])["release"]["id"].clone();
    // v2 answers `/` with its own greeting; the new smoke test wants a greeting v2 lacks.
    let toml = std::fs::read_to_string(project.file())
        .unwrap()
        .replace("SAMPLE_VERSION = \"v1\"", "SAMPLE_VERSION = \"v2\"")
        .replace("contains = \"hello\"", "contains = \"bonjour\"");
    std::fs::write(project.file(), toml).unwrap();
    commit(&project, "v2, with a smoke test it fails");
    let load = crate::support::Load::start(&url, 5, None);
    let (ok, run) = pipeline_run(&project, "staging", &[]);
    let report = load.stop();
    assert!(!ok);
    assert_eq!(run["outcome"], "failed", "{run:#}");
    assert_eq!(run["failed_step"], "deploy/deploy/deploy");
    let reason = run["reason"].as_str().unwrap();
    assert!(reason.contains("preview"), "{reason}");
    assert!(reason.contains("bonjour"), "{reason}");
    // Nobody saw v2, nothing failed, and the release is the one before.
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(
        report.by_version.keys().all(|v| v == "v1"),
        "{:?}",
        report.by_version
    );
    assert_eq!(project.json(&["status"])["release"]["id"], before);
    assert_eq!(get(&url)["version"], "v1");
    let d = deployments(&project)[0].clone();
    assert_eq!(d["outcome"], "rolled_back", "{d:#}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("before it got any traffic"),
        "{d:#}"
    );
}

#[test]
fn a_push_to_main_starts_a_staging_run_within_the_poll_interval() {
    let project = example(|t| t.replace("# WATCH", "watch = { repo = \".\", interval = \"1s\" }"));
    let _daemon = project.start();
    wait_for("the watcher's first look", Duration::from_secs(20), || {
        project
            .ok(&["events", "--limit", "200"])
            .contains("pushes start runs")
            .then_some(())
    });
    std::fs::write(project.dir.path().join("NOTES.md"), "pushed\n").unwrap();
    let pushed = commit(&project, "pushed to main");
    let started = std::time::Instant::now();
    let run = wait_for("a run for the push", Duration::from_secs(10), || {
        let runs = project.json(&["pipeline", "status"]);
        runs.as_array()?
            .iter()
            .find(|r| r["commit"] == pushed)
            .cloned()
    });
    eprintln!(
        "the push started run {} after {:?}",
        run["run"],
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "within the 1s poll interval (plus a margin)"
    );
    assert_eq!(run["environment"], "staging");
    assert_eq!(run["trigger"], "push");
    assert_eq!(run["ref"], "main");
    // A branch nobody deploys from starts nothing.
    git(project.dir.path(), &["checkout", "-q", "-b", "experiment"]);
    std::fs::write(project.dir.path().join("NOTES.md"), "experimenting\n").unwrap();
    let other = commit(&project, "an experiment");
    std::thread::sleep(Duration::from_millis(2500));
    let runs = project.json(&["pipeline", "status"]);
    assert!(
        !runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["commit"] == other),
        "{runs:#}"
    );
}

#[test]
fn dora_figures_match_the_history_they_come_from() {
    let project = example(|t| t);
    let _daemon = project.start();
    // Three commits made 3h, 2h and 1h ago, each deployed by a pipeline run.
    let now = jiff::Timestamp::now().as_second();
    let mut commit_times = Vec::new();
    for (i, hours) in [3i64, 2, 1].iter().enumerate() {
        std::fs::write(project.dir.path().join("NOTES.md"), format!("change {i}\n")).unwrap();
        git(project.dir.path(), &["add", "-A"]);
        let when = format!("@{} +0000", now - hours * 3600);
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@e.com",
                "commit",
                "-q",
                "-m",
                &format!("change {i}"),
            ])
            .env("GIT_COMMITTER_DATE", &when)
            .env("GIT_AUTHOR_DATE", &when)
            .current_dir(project.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        commit_times.push((now - hours * 3600) * 1000);
        let (ok, r) = pipeline_run(&project, "staging", &[]);
        assert!(ok, "{r:#}");
    }
    // A bad change, rolled back by its own deploy (its smoke test fails on the preview).
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(
        project.file(),
        toml.replace("contains = \"hello\"", "contains = \"nope\""),
    )
    .unwrap();
    commit(&project, "bad");
    let (ok, _) = pipeline_run(&project, "staging", &[]);
    assert!(!ok);
    // And the last good release rolled back by hand.
    let rolled = project.json(&["rollback", "--reason", "regression"]);
    assert_eq!(rolled["outcome"], "succeeded", "{rolled:#}");

    let dora = project.json(&["--env", "staging", "dora", "--days", "1"]);
    // The same figures, from the recorded deployments.
    let all = deployments(&project);
    let deploys: Vec<&Value> = all
        .iter()
        .filter(|d| {
            d["kind"] == "deploy" && (d["outcome"] == "succeeded" || d["outcome"] == "rolled_back")
        })
        .collect();
    let ms = |d: &Value, field: &str| {
        jiff::Timestamp::from_str(d[field].as_str().unwrap())
            .unwrap()
            .as_millisecond()
    };
    use std::str::FromStr;
    let succeeded: Vec<&&Value> = deploys
        .iter()
        .filter(|d| d["outcome"] == "succeeded")
        .collect();
    // Pipeline deploys are the ones with commit versions: lead = switch − commit time.
    let mut lead: Vec<f64> = Vec::new();
    for (i, d) in succeeded
        .iter()
        .rev()
        .filter(|d| d["actor"].as_str().unwrap().starts_with("pipeline"))
        .enumerate()
    {
        let switched = ms(d, "started_at") + d["switched_ms"].as_i64().unwrap();
        lead.push((switched - commit_times[i]) as f64 / 1000.0);
    }
    lead.sort_by(f64::total_cmp);
    assert_eq!(dora["lead_time"]["count"], 3, "{dora:#}");
    let median = dora["lead_time"]["median_s"].as_f64().unwrap();
    assert!(
        (median - lead[1]).abs() < 0.01,
        "median {median} vs {lead:?}"
    );
    assert!(median > 3500.0 && median < 7300.0, "about 1–2h: {median}");
    assert_eq!(dora["changes"], deploys.len());
    assert_eq!(dora["successful_deploys"], succeeded.len());
    // Failed changes: the one that rolled itself back, and the one rolled back by hand.
    assert_eq!(dora["failed_changes"], 2, "{dora:#}");
    let cfr = dora["change_failure_rate"].as_f64().unwrap();
    assert!((cfr - 2.0 / deploys.len() as f64).abs() < 1e-9, "{cfr}");
    assert_eq!(dora["time_to_restore"]["count"], 2);
    let per_day = dora["deployment_frequency_per_day"].as_f64().unwrap();
    assert!((per_day - succeeded.len() as f64).abs() < 1e-9, "{per_day}");
    // Tables for people.
    let text = project.ok(&["--env", "staging", "dora", "--days", "1"]);
    assert!(text.contains("change failure rate"), "{text}");
}

fn run_status(project: &Project, id: &Value) -> Value {
    project.json(&["pipeline", "status", &id.to_string()])
}

#[test]
fn approvals_queues_cancels_freezes_and_a_restart_mid_run() {
    let (hook, received) = webhook_receiver();
    let project = example(|t| {
        t.replace(
            "requires = [\"staging\"]",
            "requires = [\"staging\"]\napproval = \"manual\"",
        )
        .replace(
            "# WATCH",
            &format!("webhook = {{ url = \"{hook}/runs/{{run}}\" }}"),
        )
    });
    let sha = git(project.dir.path(), &["rev-parse", "HEAD"]);
    let mut daemon = project.start();
    let (ok, staging) = pipeline_run(&project, "staging", &[]);
    assert!(ok, "{staging:#}");

    // Production needs an approval: the run waits at its deploy step.
    let (_, first) = pipeline_run(&project, "production", &["--ref", &sha, "--no-wait"]);
    let waiting = wait_for("the approval wait", Duration::from_secs(30), || {
        let r = run_status(&project, &first["run"]);
        (r["status"] == "waiting").then_some(r)
    });
    assert_eq!(step(&waiting, "deploy/deploy/deploy")["status"], "waiting");
    // It says what it waits for and what to do, in the step and in `pipeline status`.
    let approve = format!("slipway approve {}", first["run"]);
    let detail = step(&waiting, "deploy/deploy/deploy")["detail"].to_string();
    assert!(detail.contains(&approve), "{detail}");
    let list = project.ok(&["pipeline", "status"]);
    assert!(list.contains(&approve), "{list}");
    let one = project.ok(&["pipeline", "status", &first["run"].to_string()]);
    assert!(one.contains(&approve), "{one}");
    // A second production run queues behind it, and says so when followed (a rerun of it
    // used to wait without a word).
    let (_, second) = pipeline_run(&project, "production", &["--ref", &sha, "--no-wait"]);
    assert_eq!(run_status(&project, &second["run"])["status"], "queued");
    let mut follower = project
        .command()
        .args(["pipeline", "rerun", &first["run"].to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = follower.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    let line = wait_for(
        "the rerun to say what it waits for",
        Duration::from_secs(30),
        || {
            while let Ok(l) = rx.try_recv() {
                said.push(l);
            }
            said.iter()
                .find(|l| l.contains("waits for approval"))
                .cloned()
        },
    );
    assert!(line.contains(&approve), "{said:?}");
    let _ = follower.kill();
    let _ = follower.wait();
    let rerun: String = said
        .iter()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .expect("the rerun names its run");
    project.ok(&["pipeline", "cancel", &rerun]);
    // Approving a run that is not waiting is refused with a reason.
    let out = project.run(&["approve", &second["run"].to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not waiting"));
    project.ok(&["approve", &first["run"].to_string()]);
    let done = wait_for("the approved run", Duration::from_secs(60), || {
        let r = run_status(&project, &first["run"]);
        r["outcome"].is_string().then_some(r)
    });
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert_eq!(done["approved_by"], "admin");
    let audit = project.ok(&["audit", "--limit", "200"]);
    assert!(
        audit.contains("pipeline.approve") && audit.contains(&format!("run {}", first["run"])),
        "{audit}"
    );
    // The queued one started after it, and now waits too; cancel it.
    wait_for("the second run to wait", Duration::from_secs(30), || {
        (run_status(&project, &second["run"])["status"] == "waiting").then_some(())
    });
    project.ok(&["pipeline", "cancel", &second["run"].to_string()]);
    let cancelled = run_status(&project, &second["run"]);
    assert_eq!(cancelled["outcome"], "cancelled", "{cancelled:#}");

    // A control plane killed mid-run: the run is failed at the next start, naming the step.
    let (_, third) = pipeline_run(&project, "production", &["--ref", &sha, "--no-wait"]);
    wait_for("the third run to wait", Duration::from_secs(30), || {
        (run_status(&project, &third["run"])["status"] == "waiting").then_some(())
    });
    daemon.kill();
    daemon = project.start();
    let interrupted = wait_for("the interrupted run", Duration::from_secs(30), || {
        let r = run_status(&project, &third["run"]);
        r["outcome"].is_string().then_some(r)
    });
    assert_eq!(interrupted["outcome"], "failed");
    let reason = interrupted["reason"].as_str().unwrap();
    assert!(
        reason.contains("interrupted by a control-plane restart"),
        "{reason}"
    );
    assert!(reason.contains("deploy/deploy/deploy"), "{reason}");
    assert_eq!(
        step(&interrupted, "deploy/deploy/deploy")["status"],
        "interrupted"
    );
    // A run ended at the next start reports too (a commit status must not stay pending).
    let path = format!("/runs/{}", third["run"]);
    let report = wait_for(
        "the interrupted run's report",
        Duration::from_secs(10),
        || {
            let got = received.lock().unwrap().clone();
            got.into_iter()
                .find(|(p, v)| p == &path && v["status"] == "failed")
        },
    );
    assert!(
        report.1["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by a control-plane restart"),
        "{report:#?}"
    );
    assert_eq!(report.1["failed_step"], "deploy/deploy/deploy");

    // Frozen: pipelines and hand deploys are refused until unfrozen; a re-run then goes through.
    project.ok(&["freeze", "staging", "--reason", "quarter close"]);
    let (ok, refused) = pipeline_run(&project, "staging", &[]);
    assert!(!ok);
    assert_eq!(refused["outcome"], "refused", "{refused:#}");
    assert_eq!(refused["failed_step"], "deploy/deploy/policy");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("quarter close")
    );
    let out = project.run(&["--env", "staging", "deploy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frozen"));
    project.ok(&["unfreeze", "staging"]);
    let rerun = project.json(&["pipeline", "rerun", &refused["run"].to_string()]);
    assert_eq!(rerun["outcome"], "succeeded", "{rerun:#}");
    assert_eq!(rerun["trigger"], "rerun");
    drop(daemon);
}
