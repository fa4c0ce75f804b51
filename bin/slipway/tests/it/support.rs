//! The test harness: a project in a temporary folder, the `slipway` binary pointed at it, and a
//! control plane started in the foreground and stopped (killed if need be) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use slipway_api::state_dir::{DaemonInfo, StateDir};

/// The `slipway` binary under test.
pub(crate) fn slipway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipway"))
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub(crate) fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A project folder with a `slipway.toml`.
pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
}

/// A small valid project whose web service binds no fixed port.
pub(crate) const SMALL: &str = r#"
[project]
name = "small"

[env]
GREETING = "hello"

[environments.staging]
[environments.production]

[services.web]
start = "slipway-sample web"
port = 0
health = "/health"

[services.worker]
kind = "worker"
start = "slipway-sample worker"
"#;

impl Project {
    /// A project with this `slipway.toml`.
    pub(crate) fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("slipway.toml"), toml).expect("write slipway.toml");
        Project { dir }
    }

    /// A copy of `examples/quickstart`.
    pub(crate) fn quickstart() -> Self {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/slipway.toml");
        Project::new(&std::fs::read_to_string(source).expect("quickstart exists"))
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.dir.path().join("slipway.toml")
    }

    pub(crate) fn state(&self) -> StateDir {
        StateDir::new(self.dir.path().join(".slipway"))
    }

    /// `slipway -f <file> …`, run in the project folder with no inherited SLIPWAY_* settings.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(slipway_bin());
        c.current_dir(self.dir.path()).arg("-f").arg(self.file());
        for (k, _) in std::env::vars() {
            if k.starts_with("SLIPWAY_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs `slipway` with `args` to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("slipway runs")
    }

    /// Runs `slipway` and requires success, returning stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "slipway {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `slipway --json …` and parses stdout.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Starts `slipway up` in the foreground on a free port and waits until it answers.
    pub(crate) fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// [`start`](Self::start) with extra environment variables (secret values, say).
    pub(crate) fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("up-{}.log", fastrand_suffix())),
        )
        .expect("log");
        let child = self
            .command()
            .args(["up", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("slipway up starts");
        let pid = child.id();
        let state = self.state();
        let mut daemon = Daemon {
            child,
            info: None,
            state: state.clone(),
        };
        let info = wait_for(
            "the control plane to answer",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    panic!("slipway up exited early: {status}");
                }
                let info = state
                    .daemon_info()
                    .ok()
                    .flatten()
                    .filter(|i| i.pid == pid)?;
                std::net::TcpStream::connect(&info.listen)
                    .ok()
                    .map(|_| info)
            },
        );
        daemon.info = Some(info);
        daemon
    }
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A control plane started by a test.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    info: Option<DaemonInfo>,
    state: StateDir,
}

impl Daemon {
    pub(crate) fn info(&self) -> &DaemonInfo {
        self.info.as_ref().expect("started")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.info().listen)
    }

    pub(crate) fn token(&self) -> String {
        self.state
            .read_token()
            .expect("token readable")
            .expect("token exists")
    }

    /// An HTTP client with the admin token.
    pub(crate) fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token()).parse().expect("header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        wait_for("the control plane to exit", deadline, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process recorded by the local driver: `(pid, start ticks)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

/// The start time of `pid` (`/proc/PID/stat` field 22), if it runs (zombies, which only wait
/// for their parent to reap them, do not count).
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace();
    // Field 3 (the state) is the first after the name; field 22 is the start time.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Running (not zombie) processes of a process group, from `/proc`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // Fields 3 (state) and 5 (process group).
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Every instance process and shim the local driver ever recorded for this project.
pub(crate) fn recorded_processes(state: &StateDir) -> Vec<Recorded> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(state.root().join("instances")) else {
        return out;
    };
    let read = |path: std::path::PathBuf| -> serde_json::Value {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    for dir in dirs.flatten() {
        let record = read(dir.path().join("instance.json"));
        // child.json too: the shim writes it before the record has the pid.
        for v in [
            &record["process"],
            &record["keeper"],
            &read(dir.path().join("child.json")),
        ] {
            if let (Some(pid), Some(ticks)) = (v["pid"].as_u64(), v["start_ticks"].as_u64())
                && pid > 1
                && !out.iter().any(|r: &Recorded| r.pid == pid as u32)
            {
                out.push(Recorded {
                    pid: pid as u32,
                    start_ticks: ticks,
                });
            }
        }
    }
    out
}

impl Drop for Project {
    /// Tests that kill the control plane leave instances behind by design; kill them (only
    /// processes whose start time still matches the record) so no test leaks processes.
    fn drop(&mut self) {
        for p in recorded_processes(&self.state()) {
            if p.pid > 1 && start_ticks(p.pid) == Some(p.start_ticks) {
                let pid = nix::unistd::Pid::from_raw(p.pid as i32);
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
