//! What a new user meets in the first hour, each a finding that once misled one: hints that
//! point at the right command, Ctrl-C that says the deployment goes on, `plan` that agrees with
//! `up`, `status` that keeps a restarting slot and says what is ready for which release, a
//! proxy port in use reported in words, two projects on one machine, tables on a terminal that
//! reports no width.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Project, SMALL, wait_for};

/// A web service whose canary waits for `slipway promote` at its second step, so a deploy
/// stays going as long as a test needs.
const PAUSING: &str = r#"
[project]
name = "pausing"

[services.web]
start = "slipway-sample web"
port = 0
replicas = 2
health = { path = "/health", interval = "200ms" }
restart = { policy = "always", backoff = "2s" }
strategy = { type = "canary", steps = ["50%", { pause = true }, "100%"], bake = "200ms" }
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the first release serves and no deployment is going.
fn first_release(project: &Project) {
    wait_for("the first release", Duration::from_secs(60), || {
        let list = project.json(&["deployments", "--limit", "1"]);
        (list[0]["outcome"] == "succeeded").then_some(())
    });
}

/// Starts a deploy in the background and waits until it is paused for a person.
fn paused_deploy(project: &Project, set: &str) -> Value {
    let started = project.json(&["deploy", "--set", set, "--no-wait"]);
    wait_for("the deploy to pause", Duration::from_secs(60), || {
        let d = project.json(&["deployments", "--limit", "1"]);
        (d[0]["deployment"] == started["deployment"] && d[0]["status"] == "paused")
            .then(|| d[0].clone())
    })
}

#[test]
fn errors_point_at_the_command_that_helps_and_say_it_once() {
    let project = Project::new(PAUSING);
    let _daemon = project.start();
    first_release(&project);
    // Nothing to pause: the hint is about deployments, not releases.
    let out = project.run(&["pause"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("no deployment"), "{text}");
    assert!(text.contains("slipway deployments"), "{text}");
    assert!(!text.contains("slipway releases"), "{text}");
    // `--unset` of a variable no `--set` overrides makes no release.
    let before = project.json(&["releases"]).as_array().unwrap().len();
    let out = project.run(&["deploy", "--unset", "NEVER_SET"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NEVER_SET"), "{}", stderr(&out));
    assert_eq!(
        project.json(&["releases"]).as_array().unwrap().len(),
        before
    );
    // A deploy while another is going: what to do is said once.
    paused_deploy(&project, "A=1");
    let out = project.run(&["deploy", "--set", "A=2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("still going"), "{text}");
    assert_eq!(text.matches("slipway abort").count(), 1, "{text}");
    project.ok(&["abort", "--reason", "test over"]);
}

#[test]
fn ctrl_c_on_deploy_stops_watching_and_says_the_deployment_goes_on() {
    let project = Project::new(PAUSING);
    let _daemon = project.start();
    first_release(&project);
    let child = project
        .command()
        .args(["deploy", "--set", "A=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let going = wait_for("the deploy to pause", Duration::from_secs(60), || {
        let d = project.json(&["deployments", "--limit", "1"]);
        (d[0]["status"] == "paused").then(|| d[0].clone())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("deployment {} goes on", going["deployment"])),
        "{text}"
    );
    assert!(text.contains("slipway abort"), "{text}");
    let d = project.json(&["deployments", "--limit", "1"]);
    assert!(d[0]["outcome"].is_null(), "still going: {:#}", d[0]);
    project.ok(&["abort", "--reason", "test over"]);
}

#[test]
fn plan_agrees_with_up_and_up_detach_does_not_wait_for_the_deploy() {
    let project = Project::new(PAUSING);
    let _daemon = project.start();
    first_release(&project);
    let plan = project.ok(&["plan"]);
    assert!(plan.contains("against r1"), "{plan}");
    assert!(plan.contains("deploys nothing"), "{plan}");
    // An edit: plan names it, says `up` deploys it, and how web moves (a canary).
    let toml = std::fs::read_to_string(project.file()).unwrap();
    std::fs::write(project.file(), toml.replace("replicas = 2", "replicas = 3")).unwrap();
    let plan = project.ok(&["plan"]);
    assert!(plan.contains("replicas: 2 → 3"), "{plan}");
    assert!(
        plan.contains("`slipway up` deploys these changes"),
        "{plan}"
    );
    assert!(
        plan.contains("web: canary: 50% → 100% (pause)") || plan.contains("web: canary"),
        "{plan}"
    );
    let json = project.json(&["plan"]);
    assert_eq!(json["deploys"], true, "{json:#}");
    // `up --detach` against the running control plane starts it and returns.
    let started = Instant::now();
    let out = project.ok(&["up", "--detach"]);
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
    assert!(out.contains("started"), "{out}");
    let d = project.json(&["deployments", "--limit", "1"]);
    assert_eq!(d[0]["release"], "r2");
    assert!(d[0]["outcome"].is_null(), "{:#}", d[0]);
    project.ok(&["abort", "--reason", "test over"]);
}

#[test]
fn status_keeps_a_restarting_slot_and_says_what_is_ready_for_which_release() {
    let project = Project::new(PAUSING);
    let _daemon = project.start();
    first_release(&project);
    let instances = |status: &Value| -> Vec<Value> {
        status["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let before = project.json(&["status"]);
    let victim = instances(&before)[0].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // During its 2 s backoff the slot is listed as restarting, never dropped.
    let restarting = wait_for(
        "the slot to show as restarting",
        Duration::from_secs(10),
        || {
            let s = project.json(&["status"]);
            let list = instances(&s);
            assert_eq!(list.len(), 2, "a slot went missing: {list:#?}");
            list.into_iter().find(|i| i["state"] == "restarting")
        },
    );
    assert_eq!(restarting["id"], victim["id"], "{restarting:#}");
    assert!(restarting["pid"].is_null(), "{restarting:#}");
    wait_for("the replacement", Duration::from_secs(20), || {
        let s = project.json(&["status"]);
        let list = instances(&s);
        assert_eq!(list.len(), 2, "a slot went missing: {list:#?}");
        list.iter().all(|i| i["health"] == "healthy").then_some(())
    });
    // During a canary: each release's own count, not `3/2`.
    paused_deploy(&project, "A=1");
    let status = project.json(&["status"]);
    let sets = status["services"][0]["sets"].as_array().unwrap().clone();
    assert_eq!(sets.len(), 2, "{sets:#?}");
    assert_eq!(sets[0]["release"], "r2");
    assert_eq!(sets[0]["role"], "new");
    assert_eq!(sets[1]["release"], "r1");
    assert_eq!(sets[1]["role"], "current");
    let table = project.ok(&["status"]);
    assert!(table.contains("r2 1/1 new · r1 2/2 current"), "{table}");
    project.ok(&["abort", "--reason", "test over"]);
}

#[test]
fn a_public_port_in_use_fails_up_at_once_in_words() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let project = Project::new(&SMALL.replace("port = 0", &format!("port = {port}")));
    let started = Instant::now();
    let out = project.run(&["up", "--detach", "--listen", "127.0.0.1:0"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "{text}");
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains("port = 0"), "says what to do: {text}");
    assert!(!text.contains("{\""), "no raw JSON: {text}");
    project.ok(&["down"]);
}

#[test]
fn two_projects_start_side_by_side_on_the_default_api_address() {
    let a = Project::quickstart();
    let b = Project::quickstart();
    let first = a.json(&["up", "--detach"]);
    let second = b.json(&["up", "--detach"]);
    assert_eq!(first["status"], "started", "{first:#}");
    assert_eq!(second["status"], "started", "{second:#}");
    assert_ne!(first["listen"], second["listen"]);
    assert_eq!(b.json(&["status"])["project"], "quickstart");
    a.ok(&["down"]);
    b.ok(&["down"]);
}

#[test]
fn tables_stay_readable_on_a_terminal_that_reports_no_width() {
    use std::os::fd::AsRawFd as _;
    let project = Project::new(SMALL);
    let _daemon = project.start();
    first_release(&project);
    let winsize = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = project
        .command()
        .arg("status")
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(slave);
    let _ = pty.master.as_raw_fd();
    let mut master = std::fs::File::from(pty.master);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    loop {
        use std::io::Read as _;
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(child.wait().unwrap().success(), "{text}");
    let header = text
        .lines()
        .find(|l| l.contains("SERVICE"))
        .unwrap_or_else(|| panic!("no header: {text}"));
    assert!(
        header.contains("KIND") && header.contains("TRAFFIC"),
        "columns squeezed: {text}"
    );
}
