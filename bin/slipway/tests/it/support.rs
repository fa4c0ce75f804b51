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

    /// A copy of `examples/quickstart` as it is in the repository, but for its fixed ports
    /// (public ports and the control plane's), which become `0` so tests can run side by side.
    pub(crate) fn quickstart() -> Self {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/slipway.toml");
        Project::new(&free_ports(
            &std::fs::read_to_string(source).expect("quickstart exists"),
        ))
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

    /// Waits until the first service takes all the proxy's traffic on a public port; its
    /// `slipway status` then, and the port.
    pub(crate) fn serving(&self) -> (serde_json::Value, u16) {
        let status = wait_for("traffic on the proxy", Duration::from_secs(30), || {
            let status = self.json(&["status"]);
            let web = &status["services"][0];
            (web["traffic"][0]["weight"] == 100.0 && web["port"].as_u64().is_some_and(|p| p > 0))
                .then_some(status)
        });
        let port = status["services"][0]["port"].as_u64().unwrap_or_default() as u16;
        (status, port)
    }

    /// Switches a fault of the proxy on (`Some(fault)`, as `PUT /faults/ENV/SERVICE` takes
    /// it) or off (`None`) for a service of the environment.
    pub(crate) fn fault(&self, environment: &str, service: &str, fault: Option<serde_json::Value>) {
        let proxy = self.state().root().join("proxy");
        let token = std::fs::read_to_string(proxy.join("admin.token")).expect("proxy token");
        let admin = std::fs::read_to_string(proxy.join("admin.addr")).expect("proxy address");
        let url = format!("http://{}/faults/{environment}/{service}", admin.trim());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let client = reqwest::Client::new();
            let request = match &fault {
                Some(f) => client.put(&url).json(f),
                None => client.delete(&url),
            };
            let r = request
                .bearer_auth(token.trim())
                .send()
                .await
                .expect("the proxy answers");
            assert!(
                r.status().is_success(),
                "{}",
                r.text().await.unwrap_or_default()
            );
        });
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

/// A project file with every fixed port (`port = N`, `listen = "…:N"`) turned into `0`.
pub(crate) fn free_ports(toml: &str) -> String {
    toml.lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("port = ")
                && t["port = ".len()..].starts_with(|c: char| c.is_ascii_digit())
            {
                let rest: String = t["port = ".len()..]
                    .chars()
                    .skip_while(char::is_ascii_digit)
                    .collect();
                format!("port = 0{rest}")
            } else if t.starts_with("listen = ") {
                "listen = \"127.0.0.1:0\"".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// A service of a `status --json` answer.
pub(crate) fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {status:#}"))
}

/// The web service's public URL, once its first release serves `replicas` healthy instances
/// with all the traffic.
pub(crate) fn first_web_url(project: &Project, replicas: usize) -> String {
    let web = wait_for("the first release", Duration::from_secs(60), || {
        let s = project.json(&["status"]);
        let web = s["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "web")?
            .clone();
        let ready = web["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["health"] == "healthy")
            .count();
        (s["release"]["id"] == "r1" && ready >= replicas && web["traffic"][0]["weight"] == 100.0)
            .then_some(web)
    });
    format!("http://127.0.0.1:{}/", web["port"].as_u64().unwrap())
}

/// A small project whose web canary waits for `slipway promote` at its second step, so a
/// deploy stays going as long as a test needs.
pub(crate) fn pausing_canary() -> Project {
    Project::new(&SMALL.replace(
        "health = \"/health\"",
        "health = \"/health\"\nstrategy = { type = \"canary\", steps = [\"50%\", { pause = true }, \"100%\"], bake = \"200ms\" }",
    ))
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

/// What a [`Load`] saw: request outcomes, and which version (`x-sample-version`) answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct LoadReport {
    /// 2xx answers.
    pub(crate) ok: u64,
    /// Anything else: other statuses and transport errors.
    pub(crate) failed: u64,
    /// 2xx answers per version.
    pub(crate) by_version: std::collections::BTreeMap<String, u64>,
    /// A few failures, for the assertion message.
    pub(crate) failures: Vec<String>,
    /// `(milliseconds since the load started, version or "failed")` of every request.
    pub(crate) timeline: Vec<(u64, String)>,
}

impl LoadReport {
    /// The requests between two points of the timeline (ms since the start).
    pub(crate) fn between(&self, from_ms: u64, to_ms: u64) -> (u64, u64) {
        let mut total = 0;
        let mut failed = 0;
        for (t, what) in &self.timeline {
            if (from_ms..=to_ms).contains(t) {
                total += 1;
                if what == "failed" {
                    failed += 1;
                }
            }
        }
        (total, failed)
    }
}

/// Steady HTTP load from `connections` keep-alive connections, on a runtime of its own, until
/// stopped: the tests' stand-in for `wrk -c N` (the benchmarks use wrk itself).
pub(crate) struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    report: std::sync::Arc<std::sync::Mutex<LoadReport>>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `connections` clients looping on `url`, each waiting `pace` between requests.
    pub(crate) fn start(url: &str, connections: usize, pace: Option<Duration>) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let report = std::sync::Arc::new(std::sync::Mutex::new(LoadReport::default()));
        let started = Instant::now();
        let url = url.to_string();
        let thread = {
            let stop = stop.clone();
            let report = report.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("load runtime");
                rt.block_on(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .pool_max_idle_per_host(connections)
                        .build()
                        .expect("client");
                    let workers: Vec<_> = (0..connections)
                        .map(|_| {
                            let (client, url, stop, report) =
                                (client.clone(), url.clone(), stop.clone(), report.clone());
                            tokio::spawn(async move {
                                let mut local: Vec<(u64, String)> = Vec::new();
                                let mut failures = Vec::new();
                                // Merged in batches, but at least every 100 ms, so a slow
                                // machine still sees the count move.
                                let mut merged_at = Instant::now();
                                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                    let outcome = match client.get(&url).send().await {
                                        Ok(r) if r.status().is_success() => {
                                            let v = r
                                                .headers()
                                                .get("x-sample-version")
                                                .and_then(|v| v.to_str().ok())
                                                .unwrap_or("?")
                                                .to_string();
                                            let _ = r.bytes().await;
                                            v
                                        }
                                        Ok(r) => {
                                            let status = r.status();
                                            let body = r.text().await.unwrap_or_default();
                                            failures.push(format!("{status}: {body}"));
                                            "failed".to_string()
                                        }
                                        Err(e) => {
                                            failures.push(format!("error: {e}"));
                                            "failed".to_string()
                                        }
                                    };
                                    let t =
                                        u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
                                    local.push((t, outcome));
                                    if local.len() >= 256
                                        || merged_at.elapsed() >= Duration::from_millis(100)
                                    {
                                        merge(&report, &mut local, &mut failures);
                                        merged_at = Instant::now();
                                    }
                                    if let Some(p) = pace {
                                        tokio::time::sleep(p).await;
                                    }
                                }
                                merge(&report, &mut local, &mut failures);
                            })
                        })
                        .collect();
                    for w in workers {
                        let _ = w.await;
                    }
                });
            })
        };
        Load {
            stop,
            report,
            started,
            thread: Some(thread),
        }
    }

    /// Milliseconds since the load started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0)
    }

    /// Requests answered so far.
    pub(crate) fn answered(&self) -> u64 {
        let r = self.report.lock().unwrap();
        r.ok + r.failed
    }

    /// Stops the clients and returns what they saw.
    pub(crate) fn stop(mut self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut r = self.report.lock().unwrap().clone();
        r.timeline.sort_by_key(|(t, _)| *t);
        r
    }
}

fn merge(
    report: &std::sync::Mutex<LoadReport>,
    local: &mut Vec<(u64, String)>,
    failures: &mut Vec<String>,
) {
    let mut r = report.lock().unwrap();
    for (t, what) in local.drain(..) {
        if what == "failed" {
            r.failed += 1;
        } else {
            r.ok += 1;
            *r.by_version.entry(what.clone()).or_default() += 1;
        }
        r.timeline.push((t, what));
    }
    if r.failures.len() < 10 {
        r.failures.extend(failures.drain(..).take(10));
    }
    failures.clear();
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// GET `url` and its JSON body (the sample app's `/` reports its version and echoed variables).
pub(crate) fn get(url: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}
