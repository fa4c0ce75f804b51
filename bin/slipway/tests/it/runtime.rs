//! The runtime end to end: instances of the quickstart become healthy, crashed ones are
//! replaced, a killed control plane's instances keep serving and are re-adopted, `down` leaves
//! no process behind, graceful stops, crash loops, secret redaction and cron runs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Project, group_members, recorded_processes, start_ticks, wait_for};

fn alive(pid: u64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && start_ticks(pid as u32).is_some()
}

use crate::support::service;

fn instances(status: &Value, name: &str) -> Vec<Value> {
    service(status, name)["instances"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until every named service has `n` healthy instances; returns the status.
fn wait_healthy(project: &Project, wanted: &[(&str, usize)], deadline: Duration) -> Value {
    wait_for("instances to become healthy", deadline, || {
        let status = project.json(&["status"]);
        wanted
            .iter()
            .all(|(name, n)| {
                let list = instances(&status, name);
                list.len() == *n && list.iter().all(|i| i["health"] == "healthy")
            })
            .then_some(status)
    })
}

/// The event log, read from the state database itself (so it also works after `down`).
fn events(project: &Project) -> Vec<Value> {
    use slipway_store::Store as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = slipway_store::SqliteStore::open(&project.state().database())
            .await
            .unwrap();
        let events = store
            .events(&slipway_store::EventQuery::default())
            .await
            .unwrap();
        events
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    })
}

fn events_of(project: &Project, kind: &str) -> Vec<Value> {
    events(project)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn no_process_left(project: &Project) {
    let recorded = recorded_processes(&project.state());
    assert!(!recorded.is_empty(), "the driver recorded its processes");
    for p in recorded {
        let ours = start_ticks(p.pid) == Some(p.start_ticks);
        assert!(!ours, "process {} is still running", p.pid);
        let members = group_members(p.pid);
        assert!(
            members.is_empty(),
            "process group {} still has {members:?}",
            p.pid
        );
    }
}

#[test]
fn quickstart_instances_become_healthy_and_down_leaves_no_process() {
    let project = Project::quickstart();
    let _daemon = project.start();
    let status = wait_healthy(
        &project,
        &[("web", 2), ("worker", 1)],
        Duration::from_secs(30),
    );
    assert_eq!(status["release"]["id"], "r1", "{status:#}");
    let web = instances(&status, "web");
    for i in web.iter().chain(instances(&status, "worker").iter()) {
        assert!(alive(i["pid"].as_u64().unwrap()), "{i}");
        assert_eq!(i["release"], "r1");
        assert_eq!(i["state"], "running");
        assert!(!i["checks"].as_array().unwrap().is_empty(), "{i}");
    }
    // CPU and memory figures from /proc.
    wait_for("memory figures", Duration::from_secs(10), || {
        let status = project.json(&["status"]);
        instances(&status, "web")
            .iter()
            .all(|i| i["rss_bytes"].as_u64().unwrap_or(0) > 1024 * 1024)
            .then_some(())
    });
    // Each web instance serves its own $PORT, with the environment's configuration.
    for i in &web {
        let port = i["port"].as_u64().unwrap();
        let body: Value = reqwest::blocking_get(&format!("http://127.0.0.1:{port}/"));
        assert_eq!(body["env"]["GREETING"], "hello from staging", "{body}");
    }
    assert_eq!(service(&status, "report")["state"], "scheduled");
    assert!(service(&status, "report")["next_run"].is_string());

    project.ok(&["down"]);
    no_process_left(&project);
}

/// Tiny blocking HTTP GET for JSON bodies, so sync tests need no runtime.
mod reqwest {
    pub(crate) fn blocking_get(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ::reqwest::get(url)
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .json()
                .await
                .unwrap()
        })
    }

    pub(crate) fn status_of(url: &str) -> Option<u16> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
    }
}

const FAST: &str = r#"
[project]
name = "fast"

[services.web]
start = "slipway-sample web"
port = 0
health = { path = "/health", interval = "200ms" }
restart = { policy = "always", backoff = "300ms" }
stop = { grace = "5s" }
"#;

#[test]
fn a_killed_instance_is_replaced_and_the_event_log_says_why() {
    let project = Project::new(FAST);
    let _daemon = project.start();
    let status = wait_healthy(&project, &[("web", 1)], Duration::from_secs(30));
    let old = instances(&status, "web")[0].clone();
    let old_pid = old["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    // Backoff (300ms) + start (~50ms) + one health interval (200ms), with room for a loaded
    // CI machine: the point is that it comes back by itself, promptly.
    let status = wait_for("a healthy replacement", Duration::from_secs(15), || {
        let status = project.json(&["status"]);
        let list = instances(&status, "web");
        (list.len() == 1 && list[0]["pid"] != old["pid"] && list[0]["health"] == "healthy")
            .then_some(status)
    });
    eprintln!("replacement healthy {:?} after kill -9", killed.elapsed());
    assert_eq!(service(&status, "web")["restarts"], 1);
    assert_eq!(service(&status, "web")["last_exit"], "killed by SIGKILL");
    let exited = events_of(&project, "instance.exited");
    let e = exited
        .iter()
        .find(|e| e["data"]["pid"] == old_pid)
        .expect("an instance.exited event for the killed pid");
    assert!(
        e["message"].as_str().unwrap().contains("killed by SIGKILL"),
        "{e}"
    );
    let restarting = events_of(&project, "instance.restarting");
    assert_eq!(restarting[0]["data"]["backoff_ms"], 300, "{restarting:?}");
    project.ok(&["down"]);
    no_process_left(&project);
}

#[test]
fn instances_survive_a_killed_control_plane_and_are_readopted_but_a_recycled_pid_is_not() {
    let project = Project::new(
        FAST.replace("[services.web]", "[services.web]\nreplicas = 2")
            .as_str(),
    );
    let mut daemon = project.start();
    let before = wait_healthy(&project, &[("web", 2)], Duration::from_secs(30));
    let pids: Vec<u64> = instances(&before, "web")
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let ports: Vec<u64> = instances(&before, "web")
        .iter()
        .map(|i| i["port"].as_u64().unwrap())
        .collect();
    daemon.kill();
    for (pid, port) in pids.iter().zip(&ports) {
        assert!(alive(*pid), "instance {pid} died with the control plane");
        assert_eq!(
            reqwest::status_of(&format!("http://127.0.0.1:{port}/")),
            Some(200),
            "instance on port {port} keeps serving"
        );
    }
    // A third record whose pid was recycled: same pid number, another process now.
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let instances_dir = project.state().root().join("instances");
    let template = std::fs::read_dir(&instances_dir)
        .unwrap()
        .flatten()
        .find(|d| {
            d.file_name().to_string_lossy().starts_with("web-")
                && d.path().join("instance.json").exists()
        })
        .unwrap()
        .path();
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(template.join("instance.json")).unwrap())
            .unwrap();
    let fake = instances_dir.join("web-1-dead");
    std::fs::create_dir_all(&fake).unwrap();
    record["id"] = "web-1-dead".into();
    record["run_dir"] = fake.display().to_string().into();
    record["process"]["pid"] = stranger.id().into();
    record["process"]["start_ticks"] = (start_ticks(stranger.id()).unwrap() + 7).into();
    record["keeper"] = Value::Null;
    std::fs::write(fake.join("instance.json"), record.to_string()).unwrap();

    let _daemon = project.start();
    let after = wait_healthy(&project, &[("web", 2)], Duration::from_secs(30));
    let mut after_pids: Vec<u64> = instances(&after, "web")
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let mut before_pids = pids.clone();
    after_pids.sort();
    before_pids.sort();
    assert_eq!(after_pids, before_pids, "the same processes, re-adopted");
    assert!(
        instances(&after, "web")
            .iter()
            .all(|i| i["adopted"] == true),
        "{after:#}"
    );
    assert_eq!(events_of(&project, "instance.adopted").len(), 2);
    let lost = events_of(&project, "instance.lost");
    assert_eq!(lost.len(), 1, "the recycled pid is reported: {lost:?}");
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the process that got the recycled pid was not signalled"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    project.ok(&["down"]);
    no_process_left(&project);
}

#[test]
fn a_worker_finishes_its_job_on_sigterm_and_one_ignoring_it_is_killed_after_the_grace() {
    let project = Project::new(
        r#"
[project]
name = "stop"

[services.worker]
kind = "worker"
start = "slipway-sample worker"
env = { SAMPLE_JOB_MS = "1500" }
stop = { grace = "10s" }

[services.stubborn]
kind = "worker"
start = "slipway-sample worker"
env = { SAMPLE_IGNORE_SIGTERM = "1" }
stop = { grace = "1s" }
"#,
    );
    let _daemon = project.start();
    wait_healthy(
        &project,
        &[("worker", 1), ("stubborn", 1)],
        Duration::from_secs(30),
    );
    // Stop in the middle of a job.
    wait_for("a job in progress", Duration::from_secs(10), || {
        let out = project.ok(&["logs", "worker", "--limit", "1"]);
        out.contains("started").then_some(())
    });
    let started = Instant::now();
    project.ok(&["down"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the stubborn worker had its 1s grace ({took:?})"
    );
    assert!(took < Duration::from_secs(10), "but not more ({took:?})");
    no_process_left(&project);

    let logs = read_all_logs(&project);
    let worker: Vec<&Value> = logs
        .iter()
        .filter(|r| r["instance"].as_str().unwrap().starts_with("worker"))
        .collect();
    let term = worker
        .iter()
        .position(|r| r["message"] == "SIGTERM received")
        .expect("the worker logged SIGTERM");
    let in_progress = worker[..term]
        .iter()
        .rev()
        .find_map(|r| r["message"].as_str()?.strip_suffix(" started"))
        .expect("a job was in progress")
        .to_string();
    assert!(
        worker[term..]
            .iter()
            .any(|r| r["message"] == format!("{in_progress} finished")),
        "the worker finished {in_progress} after SIGTERM: {worker:#?}"
    );
    let stubborn = logs
        .iter()
        .filter(|r| r["instance"].as_str().unwrap().starts_with("stubborn"))
        .any(|r| r["message"].as_str().unwrap().contains("ignored"));
    assert!(stubborn, "the stubborn worker ignored SIGTERM");
    let stopped = events_of(&project, "instance.stopped");
    assert!(
        stopped.iter().any(|e| {
            e["subject"].as_str().unwrap().starts_with("stubborn")
                && e["message"].as_str().unwrap().contains("SIGKILL")
        }),
        "{stopped:#?}"
    );
    assert!(
        stopped.iter().any(|e| {
            e["subject"].as_str().unwrap().starts_with("worker") && e["data"]["exit_code"] == 0
        }),
        "the worker exited cleanly: {stopped:#?}"
    );
}

/// Every log record the driver stored for the project (rotated files included).
fn read_all_logs(project: &Project) -> Vec<Value> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(project.state().root().join("instances"))
        .unwrap()
        .flatten()
    {
        let id = dir.file_name().to_string_lossy().to_string();
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if !file
                .file_name()
                .to_string_lossy()
                .starts_with("output.jsonl")
            {
                continue;
            }
            for line in std::fs::read_to_string(file.path()).unwrap().lines() {
                if let Ok(mut v) = serde_json::from_str::<Value>(line) {
                    v["instance"] = id.clone().into();
                    out.push(v);
                }
            }
        }
    }
    out.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    out
}

#[test]
fn a_crash_looping_service_backs_off_and_is_marked_crashlooping() {
    let project = Project::new(
        r#"
[project]
name = "loop"

[services.broken]
kind = "worker"
start = "echo starting; exit 1"
restart = { policy = "always", backoff = "100ms", max_backoff = "800ms", crashloop_restarts = 4, crashloop_window = "1m" }
"#,
    );
    let _daemon = project.start();
    wait_for("crashlooping", Duration::from_secs(30), || {
        let status = project.json(&["status"]);
        (service(&status, "broken")["state"] == "crashlooping").then_some(())
    });
    // Let it go on a little: the backoff must stay at its cap, not hammer.
    wait_for("seven starts", Duration::from_secs(30), || {
        (events_of(&project, "instance.started").len() >= 7).then_some(())
    });
    let starts: Vec<jiff::Timestamp> = events_of(&project, "instance.started")
        .iter()
        .map(|e| e["time"].as_str().unwrap().parse().unwrap())
        .collect();
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1].duration_since(w[0]).as_millis()) as u64)
        .collect();
    let backoffs: Vec<u64> = events_of(&project, "instance.restarting")
        .iter()
        .map(|e| e["data"]["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(&backoffs[..5], &[100, 200, 400, 800, 800], "{backoffs:?}");
    for (gap, backoff) in gaps.iter().zip(&backoffs) {
        assert!(
            gap >= backoff,
            "restart came {gap}ms after the previous start, before its {backoff}ms backoff ({gaps:?})"
        );
    }
    let looping = events_of(&project, "service.crashlooping");
    assert_eq!(looping.len(), 1, "announced once: {looping:?}");
    project.ok(&["down"]);
    no_process_left(&project);
}

#[test]
fn secret_values_never_appear_in_logs_or_stored_files() {
    const SECRET: &str = "s3cr3t-Value-42x";
    let project = Project::new(
        r#"
[project]
name = "secret"

[secrets]
API_TOKEN = { required = true }

[services.worker]
kind = "worker"
start = "slipway-sample worker"
env = { SAMPLE_PRINT = "API_TOKEN" }
"#,
    );
    let _daemon = project.start_with_env(&[("API_TOKEN", SECRET)]);
    let out = wait_for("the printed variable", Duration::from_secs(30), || {
        let out = project.ok(&["logs", "worker", "--json"]);
        out.contains("API_TOKEN").then_some(out)
    });
    assert!(!out.contains(SECRET), "{out}");
    assert!(out.contains("[redacted]"), "{out}");
    let human = project.ok(&["logs", "worker", "--grep", "API_TOKEN"]);
    assert!(
        !human.contains(SECRET) && human.contains("[redacted]"),
        "{human}"
    );
    project.ok(&["down"]);
    for file in slipway_runtime::compliance::files_under(project.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is stored in {}",
            file.display()
        );
    }
}

#[test]
fn a_missing_required_secret_fails_the_service_with_a_reason() {
    let project = Project::new(
        r#"
[project]
name = "nosecret"

[secrets]
API_TOKEN = { required = true }

[services.worker]
kind = "worker"
start = "slipway-sample worker"
"#,
    );
    let _daemon = project.start();
    let status = project.json(&["status"]);
    assert_eq!(service(&status, "worker")["state"], "failed");
    let failed = events_of(&project, "service.failed");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("secret API_TOKEN has no value"),
        "{failed:?}"
    );
}

#[test]
fn cron_runs_on_demand_keep_history_and_do_not_overlap() {
    let project = Project::new(
        r#"
[project]
name = "cron"

[services.report]
kind = "cron"
start = "slipway-sample job"
schedule = "0 3 * * *"
timezone = "Europe/Madrid"
env = { SAMPLE_JOB_MS = "1000", SAMPLE_EXIT_CODE = "3" }
"#,
    );
    let _daemon = project.start();
    let started = project.json(&["cron", "run", "report"]);
    let run = started["run"].as_str().unwrap().to_string();
    let second = project.run(&["cron", "run", "report"]);
    assert!(!second.status.success(), "an overlapping run is refused");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("still going"), "{stderr}");
    let status = wait_for("the run to finish", Duration::from_secs(30), || {
        let status = project.json(&["status"]);
        let runs = service(&status, "report")["runs"].as_array()?.clone();
        (runs.len() == 1 && runs[0]["outcome"] != "running").then_some(status)
    });
    let r = &service(&status, "report")["runs"][0];
    assert_eq!(r["id"], run.as_str());
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert!(r["duration_ms"].as_u64().unwrap() >= 1000, "{r}");
    assert_eq!(r["trigger"], "manual");
    let next: jiff::Timestamp = service(&status, "report")["next_run"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let local = next.to_zoned(jiff::tz::TimeZone::get("Europe/Madrid").unwrap());
    assert_eq!((local.hour(), local.minute()), (3, 0), "03:00 Madrid time");
    assert_eq!(events_of(&project, "cron.skipped").len(), 1);
    let logs = project.ok(&["logs", "report"]);
    assert!(logs.contains("job 1 started"), "{logs}");
}

#[test]
fn logs_filter_by_level_and_since_and_reject_a_bad_level() {
    let project = Project::new(
        r#"
[project]
name = "logs"

[services.talker]
kind = "worker"
start = "echo plain; echo '{\"level\":\"warn\",\"msg\":\"careful\"}'; echo '{\"level\":\"error\",\"msg\":\"bad\",\"code\":5}'; exec sleep 300"
"#,
    );
    let _daemon = project.start();
    wait_for("three lines", Duration::from_secs(20), || {
        let n = project.ok(&["logs", "talker", "--json"]).lines().count();
        (n >= 3).then_some(())
    });
    let warn = project.ok(&["logs", "talker", "--level", "warn"]);
    assert!(
        warn.contains("careful") && warn.contains("bad") && !warn.contains("plain"),
        "{warn}"
    );
    let errors = project.ok(&["logs", "talker", "--level", "error", "--json"]);
    let lines: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["fields"]["code"], 5);
    let future = project.ok(&["logs", "talker", "--since", "2999-01-01T00:00:00Z"]);
    assert!(future.trim().is_empty(), "{future}");
    let bad = project.run(&["logs", "talker", "--level", "loud"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown level"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn cron_runs_on_schedule_and_a_run_over_its_timeout_is_stopped() {
    let project = Project::new(
        r#"
[project]
name = "tick"

[services.tick]
kind = "cron"
start = "echo tick; exec sleep 30"
schedule = "*/2 * * * * *"
timeout = "1s"
"#,
    );
    let _daemon = project.start();
    let status = wait_for("two scheduled runs", Duration::from_secs(30), || {
        let status = project.json(&["status"]);
        let runs = service(&status, "tick")["runs"].as_array()?.clone();
        (runs.iter().filter(|r| r["outcome"] == "timed-out").count() >= 2).then_some(status)
    });
    for r in service(&status, "tick")["runs"].as_array().unwrap() {
        assert_eq!(r["trigger"], "schedule");
        if r["outcome"] == "timed-out" {
            let ms = r["duration_ms"].as_u64().unwrap();
            assert!(
                (1000..5000).contains(&ms),
                "stopped after its 1s timeout: {r}"
            );
        }
    }
    assert!(
        events_of(&project, "cron.skipped").is_empty(),
        "a 1s run never overlaps a 2s schedule"
    );
    project.ok(&["down"]);
    no_process_left(&project);
}

#[test]
fn a_failing_liveness_check_restarts_the_instance() {
    let project = Project::new(
        r#"
[project]
name = "live"

[services.web]
port = 0
start = "slipway-sample web"
health = { path = "/health", interval = "200ms" }
liveness = { path = "/health", interval = "200ms", unhealthy_threshold = 2 }
restart = { backoff = "100ms" }
"#,
    );
    let _daemon = project.start();
    let status = wait_healthy(&project, &[("web", 1)], Duration::from_secs(30));
    let old = instances(&status, "web")[0].clone();
    let port = old["port"].as_u64().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ::reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/admin/unhealthy"))
            .send()
            .await
            .unwrap();
    });
    wait_for("a fresh, healthy instance", Duration::from_secs(20), || {
        let status = project.json(&["status"]);
        let list = instances(&status, "web");
        (list.len() == 1 && list[0]["pid"] != old["pid"] && list[0]["health"] == "healthy")
            .then_some(())
    });
    let unhealthy = events_of(&project, "instance.unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("liveness")),
        "{unhealthy:#?}"
    );
    let restarting = events_of(&project, "instance.restarting");
    assert!(
        restarting[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("liveness check failed"),
        "{restarting:#?}"
    );
}

#[test]
fn logs_follow_prints_new_lines_as_they_are_written() {
    use std::io::BufRead;
    let project = Project::new(
        r#"
[project]
name = "follow"

[services.worker]
kind = "worker"
start = "slipway-sample worker"
env = { SAMPLE_JOB_MS = "100" }
"#,
    );
    let _daemon = project.start();
    let mut child = project
        .command()
        .args(["logs", "worker", "-f", "--limit", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while jobs.len() < 5 && Instant::now() < deadline {
        let line = lines.next().unwrap().unwrap();
        if let Some(n) = line.split("job ").nth(1).and_then(|r| r.split(' ').next())
            && line.contains("finished")
        {
            jobs.push(n.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(jobs.len() >= 5, "followed {jobs:?}");
    assert!(
        jobs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost or repeated: {jobs:?}"
    );
}
