//! The shipped examples, as they are in the repository (copied to a temporary folder, fixed
//! ports made `0`): the quickstart deploys with each strategy under load without failing a
//! request, deploys while idle, rolls back at once, runs its cron job, keeps its history and
//! leaves no process after `down`; a broken first release fails `up --detach` fast with its
//! cause; the pipeline example runs its pipeline. A change that breaks an example fails here.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    Load, Project, first_web_url, free_ports, get, recorded_processes, service, start_ticks,
    wait_for,
};

/// The web service's public URL once the first release serves.
fn web_url(project: &Project) -> String {
    let url = first_web_url(project, 2);
    wait_for("no deployment going", Duration::from_secs(60), || {
        let list = project.json(&["deployments", "--limit", "1"]);
        list[0]["outcome"].is_string().then_some(())
    });
    url
}

/// `slipway --json ARGS` that must succeed; the printed value.
fn deploy_ok(project: &Project, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = project.run(&all);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "slipway {args:?} failed: {value:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    value
}

fn assert_no_process_left(project: &Project) {
    let left: Vec<u32> = recorded_processes(&project.state())
        .into_iter()
        .filter(|p| start_ticks(p.pid) == Some(p.start_ticks))
        .map(|p| p.pid)
        .collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
}

#[test]
fn quickstart_deploys_each_strategy_under_load_without_a_failed_request() {
    let project = Project::quickstart();
    let _daemon = project.start();
    let url = web_url(&project);
    let load = Load::start(&url, 50, None);
    wait_for("load running", Duration::from_secs(10), || {
        (load.answered() > 500).then_some(())
    });
    // The README's own commands: a canary (the quickstart's strategy), then each other one.
    // The canary without `--json`, as in a CI log: its progress lines carry the analysis.
    let started = Instant::now();
    let out = project.run(&["deploy", "--set", "SAMPLE_VERSION=v2"]);
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{progress}");
    assert!(
        progress.contains("canary") && progress.contains("vs stable"),
        "piped progress shows canary against stable: {progress}"
    );
    let mut took = vec![("v2", started.elapsed())];
    assert_eq!(get(&url)["version"], "v2");
    for (args, version) in [
        (
            vec![
                "deploy",
                "--strategy",
                "rolling",
                "--set",
                "SAMPLE_VERSION=v3",
            ],
            "v3",
        ),
        (
            vec![
                "deploy",
                "--strategy",
                "blue-green",
                "--set",
                "SAMPLE_VERSION=v4",
            ],
            "v4",
        ),
    ] {
        let started = Instant::now();
        let d = deploy_ok(&project, &args);
        assert_eq!(d["outcome"], "succeeded", "{args:?}: {d:#}");
        took.push((version, started.elapsed()));
        assert_eq!(get(&url)["version"], version);
    }
    // Back to the previous release: r3 (v3), kept warm by the blue-green deploy.
    let back = deploy_ok(&project, &["rollback"]);
    assert_eq!(back["outcome"], "succeeded", "{back:#}");
    assert_eq!(back["to_release"], "r3", "{back:#}");
    let switched = back["duration_ms"].as_u64().unwrap();
    assert!(switched < 1000, "rollback took {switched} ms: {back:#}");
    assert_eq!(get(&url)["version"], "v3");
    let after = load.answered();
    wait_for("load after the rollback", Duration::from_secs(10), || {
        (load.answered() > after + 200).then_some(())
    });
    let report = load.stop();
    eprintln!(
        "quickstart under load: {} ok, {} failed, by version {:?}, deploys took {took:?}, rollback {switched} ms",
        report.ok, report.failed, report.by_version
    );
    assert_eq!(
        report.failed, 0,
        "{} requests failed: {:?}",
        report.failed, report.failures
    );
    for v in ["v1", "v2", "v3", "v4"] {
        assert!(report.by_version.contains_key(v), "{:?}", report.by_version);
    }
    for (version, t) in took {
        assert!(
            t < Duration::from_secs(60),
            "deploy of {version} took {t:?}"
        );
    }
}

#[test]
fn quickstart_deploys_while_idle_runs_its_cron_job_and_keeps_its_history() {
    let project = Project::quickstart();
    let _daemon = project.start();
    let url = web_url(&project);
    // The cron job, now, by hand; its run shows in `status`.
    let out = project.ok(&["cron", "run", "report"]);
    assert!(out.contains("report"), "{out}");
    let run = wait_for("the cron run to finish", Duration::from_secs(30), || {
        let status = project.json(&["status"]);
        let runs = service(&status, "report")["runs"].as_array()?.clone();
        runs.iter().find(|r| r["outcome"] == "succeeded").cloned()
    });
    assert_eq!(run["exit_code"], 0, "{run:#}");
    // Nobody calls it: the canary has nothing to compare, so it goes on by itself (it used
    // to wait a minute for the cron "instance" to become ready, then roll everything back).
    let started = Instant::now();
    let d = deploy_ok(&project, &["deploy", "--set", "SAMPLE_VERSION=v2"]);
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "an idle deploy took {:?}",
        started.elapsed()
    );
    let idle = project.json(&["events", "--limit", "500"]);
    assert!(
        idle.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "deploy.idle"),
        "the idle steps are said in the event log"
    );
    // A config-only release: every service gets the value.
    let d = deploy_ok(&project, &["deploy", "--set", "GREETING=hi from r3"]);
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    assert_eq!(get(&url)["env"]["GREETING"], "hi from r3");
    // The cron service moved with both releases, and its run history with it.
    let status = project.json(&["status"]);
    let report = service(&status, "report");
    assert_eq!(report["state"], "scheduled", "{report:#}");
    assert!(
        report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == run["id"]),
        "the run before the deploys is still listed: {report:#}"
    );
    let out = project.ok(&["cron", "run", "report"]);
    assert!(out.contains("r3"), "the run is of the new release: {out}");
    // Back to r1 by name: every service of it comes back, the cron one included.
    let back = deploy_ok(&project, &["rollback", "--to", "r1"]);
    assert_eq!(back["outcome"], "succeeded", "{back:#}");
    let status = project.json(&["status"]);
    assert_eq!(status["release"]["id"], "r1");
    let report = service(&status, "report");
    assert_eq!(report["state"], "scheduled", "{report:#}");
    assert!(report["runs"].as_array().unwrap().len() >= 2, "{report:#}");
    project.ok(&["down"]);
    assert_no_process_left(&project);
}

/// A quickstart whose web `start` has a typo.
fn broken_quickstart(edit: impl Fn(String) -> String) -> Project {
    let project = Project::quickstart();
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(project.file(), edit(toml)).unwrap();
    project
}

#[test]
fn up_detach_with_a_broken_start_exits_1_fast_with_the_cause() {
    let project = broken_quickstart(|t| {
        t.replace(
            "start = \"slipway-sample web\"",
            "start = \"slipway-smaple web\"",
        )
    });
    let started = Instant::now();
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("slipway-smaple: not found"),
        "the instance's own words: {stderr}"
    );
    assert!(stderr.contains("crash-looping"), "{stderr}");
    assert!(stderr.contains("exit status 127"), "{stderr}");
    assert!(stderr.contains("slipway logs web"), "{stderr}");
    project.ok(&["down"]);
    assert_no_process_left(&project);
}

#[test]
fn up_detach_with_a_missing_secret_exits_1_naming_it() {
    let project = broken_quickstart(|t| {
        t.replace(
            "[services.web]",
            "[secrets]\nAPI_TOKEN = { required = true }\n\n[services.web]",
        )
    });
    let started = Instant::now();
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "{stderr}");
    assert!(stderr.contains("API_TOKEN"), "{stderr}");
    project.ok(&["down"]);
}

#[test]
fn pipeline_example_runs_its_pipeline_to_staging_then_production() {
    let project = Project::new("");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline");
    for entry in walk(&source) {
        let rel = entry.strip_prefix(&source).unwrap();
        let target = project.dir.path().join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(project.file(), free_ports(&toml)).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(project.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    };
    // The example's own instructions, from its header comment.
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "first"]);
    project.ok(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    let staging = project.json(&["pipeline", "run"]);
    assert_eq!(staging["outcome"], "succeeded", "{staging:#}");
    let production = project.json(&["--env", "production", "pipeline", "run", "--ref", "main"]);
    assert_eq!(production["outcome"], "succeeded", "{production:#}");
    assert_eq!(production["commit"], staging["commit"]);
    // Production's first release is watched for the monitor's window too (it used to return
    // at once: a first release had no watch).
    let monitor = |run: &Value| -> Value {
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["jobs"].as_array().unwrap().clone())
            .flat_map(|j| j["steps"].as_array().unwrap().clone())
            .find(|st| st["name"] == "monitor")
            .expect("a monitor step")
    };
    for run in [&staging, &production] {
        let step = monitor(run);
        assert!(
            step["duration_ms"].as_u64().unwrap() >= 9_000,
            "the 10s window was watched: {step:#}"
        );
    }
    project.ok(&["down"]);
    assert_no_process_left(&project);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
