//! The control plane: start and stop, authentication, audit, bad requests, the event stream,
//! applying edits, and state that survives `kill -9`.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use slipway_store::{EventQuery, SqliteStore, Store};

use crate::support::{Project, SMALL, wait_for};

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn quickstart_detaches_answers_status_and_stops() {
    let project = Project::quickstart();
    let started = project.json(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    let pid = started["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    let status = project.json(&["status"]);
    assert_eq!(status["environment"], "staging");
    assert_eq!(status["release"]["id"], "r1");
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "worker", "report"]);
    assert_eq!(status["services"][0]["kind"], "web");
    assert!(status["services"][0]["instances"].is_array());
    assert!(status["services"][0]["traffic"].is_array());
    assert_eq!(status["control"]["pid"], pid);
    let production = project.json(&["--env", "production", "status"]);
    assert_eq!(production["environment"], "production");
    assert_eq!(production["services"][0]["replicas"], 3);
    assert_eq!(
        production["release"],
        Value::Null,
        "production is not brought up"
    );
    assert_eq!(production["services"][0]["state"], "not-running");
    let stopped = project.json(&["down"]);
    assert_eq!(stopped["status"], "stopped");
    assert!(!alive(pid), "the daemon is gone after down");
    assert!(project.state().daemon_info().unwrap().is_none());
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let project = Project::new(SMALL);
    let daemon = project.start();
    let mode = std::fs::metadata(project.state().token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let anonymous = reqwest::Client::new();
    let health = anonymous.get(daemon.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for path in [
        "/v1/status",
        "/v1/events",
        "/v1/audit",
        "/openapi.json",
        "/v1/nowhere",
    ] {
        let res = anonymous.get(daemon.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} without a token");
        assert!(res.headers().contains_key("www-authenticate"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "missing bearer token");
        assert!(body["hint"].as_str().unwrap().contains("admin.token"));
        let wrong = anonymous
            .get(daemon.url(path))
            .bearer_auth("slw_not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let ok = daemon
        .client()
        .get(daemon.url("/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-request-id"));
    let doc: Value = daemon
        .client()
        .get(daemon.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/status"].is_object());
}

#[tokio::test]
async fn mutations_are_audited_with_actor_and_outcome_and_reads_are_not() {
    let project = Project::new(SMALL);
    let daemon = project.start();
    let client = daemon.client();
    crate::support::wait_for("the first deploy", Duration::from_secs(30), || {
        let d = project.json(&["deployments", "--limit", "1"]);
        d[0]["outcome"].is_string().then_some(())
    });
    let created = client
        .post(daemon.url("/v1/annotations"))
        .json(&json!({ "message": "migrated the users table" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let denied = reqwest::Client::new()
        .post(daemon.url("/v1/annotations"))
        .json(&json!({ "message": "sneaky" }))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    client.get(daemon.url("/v1/status")).send().await.unwrap();
    let audit: Vec<Value> = client
        .get(daemon.url("/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap(),
                a["action"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    // What the control plane did on its own at start comes first, as the system actor.
    assert_eq!(
        rows,
        [
            ("system", "config.apply", "succeeded"),
            ("system", "deploy.start", "succeeded"),
            ("admin", "annotation.add", "succeeded"),
            ("anonymous", "annotation.add", "denied")
        ]
    );
    assert!(
        audit[2]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(audit[2]["details"]["status"], 201);
    // The denied note never reached the event log.
    let events: Vec<Value> = client
        .get(daemon.url("/v1/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "migrated the users table")
    );
    assert!(!events.iter().any(|e| e["message"] == "sneaky"));
    // The CLI shows the same log.
    let cli = project.json(&["audit"]);
    assert_eq!(cli.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_reason() {
    let project = Project::new(SMALL);
    let daemon = project.start();
    let client = daemon.client();
    let cases = [
        (
            client
                .post(daemon.url("/v1/annotations"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid JSON",
        ),
        (
            client
                .post(daemon.url("/v1/annotations"))
                .json(&json!({ "note": "x" })),
            422,
            "message",
        ),
        (
            client.post(daemon.url("/v1/annotations")).body("message=x"),
            415,
            "invalid JSON",
        ),
        (
            client
                .post(daemon.url("/v1/annotations"))
                .json(&json!({ "message": "  " })),
            400,
            "empty",
        ),
        (
            client.get(daemon.url("/v1/events?limit=lots")),
            400,
            "invalid query",
        ),
        (
            client.get(daemon.url("/v1/status?env=qa")),
            404,
            "unknown environment",
        ),
        (
            client.post(daemon.url("/v1/environments/qa/apply")),
            404,
            "unknown environment",
        ),
        (client.get(daemon.url("/v1/nowhere")), 404, "no such route"),
    ];
    for (request, status, reason) in cases {
        let res = request.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{reason}");
        let body: Value = res.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(reason),
            "{error:?} should mention {reason:?}"
        );
        assert!(body["hint"].is_string(), "{body}");
    }
}

#[test]
fn one_control_plane_per_state_directory() {
    let project = Project::new(SMALL);
    let daemon = project.start();
    // Running again applies the file to the running one.
    let again = project.ok(&["up", "--listen", "127.0.0.1:0"]);
    assert!(again.contains("already running"), "{again}");
    // Even when the daemon file is gone, a second daemon is refused, naming the first.
    std::fs::remove_file(project.state().daemon_file()).unwrap();
    let out = project.run(&["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("already runs") || text.contains("already running"),
        "{text}"
    );
    assert!(text.contains(&daemon.info().pid.to_string()), "{text}");
    drop(daemon);
}

#[test]
fn events_follow_streams_new_events() {
    let project = Project::new(SMALL);
    let _daemon = project.start();
    let mut follower = project
        .command()
        .args(["--json", "events", "-f", "--limit", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = follower.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    // The follower sees notes made after it started, whenever they come.
    let mut n = 0;
    wait_for(
        "the annotation on the stream",
        Duration::from_secs(20),
        || {
            n += 1;
            project.ok(&["annotate", &format!("note {n}")]);
            let seen = lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("\"annotation\""));
            seen.then_some(())
        },
    );
    let first: Value = serde_json::from_str(
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("\"annotation\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["kind"], "annotation");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn edits_show_in_plan_and_up_applies_them() {
    let project = Project::new(SMALL);
    let _daemon = project.start();
    // The plan compares with the release that runs: once the first deploy has committed.
    wait_for("the first release to run", Duration::from_secs(30), || {
        (project.json(&["plan"])["recorded"] == true).then_some(())
    });
    assert!(project.ok(&["plan"]).contains("No changes"));
    let edited = SMALL.replace(
        "GREETING = \"hello\"",
        "GREETING = \"hi\"\nAPI_TOKEN = \"s3cr3t-value\"",
    ) + "replicas = 3\n";
    std::fs::write(project.file(), edited).unwrap();
    let text = project.ok(&["plan"]);
    assert!(text.contains("replicas: 1 → 3"), "{text}");
    assert!(
        text.contains("GREETING changed: \"hello\" → \"hi\"")
            || text.contains("GREETING changed: hello → hi"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t-value"),
        "secret-looking values are masked:\n{text}"
    );
    let applied = project.json(&["up"]);
    assert_eq!(applied["apply"]["generation"], 2);
    assert_eq!(applied["apply"]["changed"], true);
    assert!(project.ok(&["plan"]).contains("No changes"));
    // A broken edit is refused and changes nothing.
    std::fs::write(project.file(), "[services.web]\nport = \"x\"\n").unwrap();
    let out = project.run(&["up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("slipway.toml:2:8"));
    assert_eq!(project.json(&["status"])["generation"], 2);
}

#[test]
fn sigterm_stops_cleanly_and_a_killed_daemon_is_cleaned_up_by_down() {
    let project = Project::new(SMALL);
    let mut daemon = project.start();
    let pid = daemon.info().pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
    assert!(project.state().daemon_info().unwrap().is_none());

    let mut daemon = project.start();
    daemon.kill();
    assert!(
        project.state().daemon_info().unwrap().is_some(),
        "kill -9 leaves the file"
    );
    let out = project.ok(&["down"]);
    assert!(out.contains("without cleaning up"), "{out}");
    assert!(project.state().daemon_info().unwrap().is_none());
    // And the next start works.
    let daemon = project.start();
    let events = project.json(&["events", "--limit", "100"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "daemon.started").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "daemon.stopped").count(),
        1,
        "{kinds:?}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_in_the_middle_of_writes() {
    let project = Project::new(SMALL);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    for round in 0..3 {
        let mut daemon = project.start();
        let client = daemon.client();
        let url = daemon.url("/v1/annotations");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let message = format!("round {round} writer {w} note {i}");
                        match client
                            .post(&url)
                            .json(&json!({ "message": message }))
                            .send()
                            .await
                        {
                            Ok(res) if res.status() == 201 => acked.lock().unwrap().push(message),
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Kill it while writes are in full flow.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < 100 + round * 37 {
            assert!(
                std::time::Instant::now() < deadline,
                "writes did not get going"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        daemon.kill();
        for w in writers {
            let _ = w.await;
        }
        acknowledged.extend(acked.lock().unwrap().drain(..));
    }
    // The next start works and every acknowledged write is there.
    let daemon = project.start();
    let events: Vec<Value> = daemon
        .client()
        .get(daemon.url("/v1/events?limit=10000&after=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    drop(daemon);
    let store = SqliteStore::open(&project.state().database())
        .await
        .unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    let ids: Vec<i64> = store
        .events(&EventQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids stay ordered"
    );
}
