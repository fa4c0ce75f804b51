//! Supervision: keeps each service of an environment at its declared shape through a driver.
//!
//! Every replica slot of a web or worker service has a task that starts (or adopts) an
//! instance, runs its readiness and liveness checks, and restarts it by its restart policy with
//! exponential backoff, marking the service `crashlooping` when restarts pile up. A cron service
//! has one task that starts runs on its schedule. Every transition is an event in the store.
//!
//! The supervisor can let go in two ways: [`Runtime::stop_all`] stops every instance
//! (`slipway down`), [`Runtime::detach`] leaves them running for the next control plane to
//! adopt (the daemon exiting or being upgraded).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use slipway_spec::model::ServiceKind;
use slipway_spec::resolve::{Probe, ResolvedEnv, ResolvedService};
use slipway_store::{EventLevel, NewEvent, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, Exit, Found, Instance, InstanceSpec, LogPolicy, Verdict};
use crate::health::{self, CheckResult, Health, Tracker};
use crate::logs::{LogFilter, LogRecord, Redactor};
use crate::ports::PortAllocator;

/// Check results kept per instance.
const KEEP_CHECKS: usize = 10;
/// Cron runs kept per service.
const KEEP_RUNS: usize = 20;
/// An instance that stayed up this long resets its service's backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// A release: what instances run. Builds happen once per release and service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Id, e.g. `r3`.
    pub id: String,
    /// Code version label.
    pub version: String,
}

/// Runtime settings from the control plane.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// Put first on instances' `PATH` (where `slipway` and `slipway-sample` live).
    pub bin_dir: Option<PathBuf>,
    /// Where per-release build output goes.
    pub releases_dir: PathBuf,
    /// Secret values by name (never logged; redacted from instance output).
    pub secrets: IndexMap<String, String>,
    /// Log rotation.
    pub logs: LogPolicy,
}

/// An instance as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Id.
    pub id: String,
    /// Main pid.
    pub pid: u32,
    /// Release.
    pub release: String,
    /// Slot.
    pub slot: u32,
    /// `starting`, `running`, `stopping`.
    pub state: String,
    /// `starting`, `healthy`, `unhealthy`, `none`.
    pub health: String,
    /// `$PORT`.
    pub port: Option<u16>,
    /// Started.
    pub started_at: Timestamp,
    /// Re-adopted after a control-plane restart.
    pub adopted: bool,
    /// Recent readiness results, newest last.
    pub checks: Vec<CheckResult>,
    /// CPU use over the last few seconds, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory of its process group.
    pub rss_bytes: Option<u64>,
}

/// One cron run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CronRun {
    /// Instance id.
    pub id: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// Started.
    pub started_at: Timestamp,
    /// Finished (None while running).
    pub finished_at: Option<Timestamp>,
    /// Exit status.
    pub exit_code: Option<i32>,
    /// `running`, `succeeded`, `failed`, `timed-out`.
    pub outcome: String,
    /// Duration in milliseconds.
    pub duration_ms: Option<u64>,
}

/// A service as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: ServiceKind,
    /// Declared replicas.
    pub replicas: u32,
    /// `running`, `crashlooping`, `failed`, `build-failed`, `scheduled`, `stopped`.
    pub state: String,
    /// Restarts since the control plane started supervising it.
    pub restarts: u32,
    /// How the last instance ended.
    pub last_exit: Option<String>,
    /// Live instances.
    pub instances: Vec<InstanceStatus>,
    /// Next scheduled run (cron).
    pub next_run: Option<Timestamp>,
    /// Recent runs, newest last (cron).
    pub runs: Vec<CronRun>,
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such service.
    #[error("no service named `{0}`")]
    UnknownService(String),
    /// It is not a cron service.
    #[error("`{0}` is not a cron service")]
    NotCron(String),
    /// The run was refused.
    #[error("{0}")]
    Refused(String),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
}

struct Supervised {
    fingerprint: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    status: Arc<Mutex<ServiceStatus>>,
    run_now: Option<mpsc::Sender<oneshot::Sender<Result<String, String>>>>,
}

/// Shared by a service's tasks.
struct Ctx {
    driver: Arc<dyn Driver>,
    store: Arc<dyn Store>,
    ports: Arc<PortAllocator>,
    client: reqwest::Client,
    environment: String,
    release: Release,
    service: ResolvedService,
    fingerprint: String,
    env: IndexMap<String, String>,
    secret_keys: Vec<String>,
    logs: LogPolicy,
    status: Arc<Mutex<ServiceStatus>>,
    /// Stop instances when cancelled (false: leave them for the next control plane).
    stop_on_cancel: Arc<AtomicBool>,
}

/// See the module docs.
pub struct Runtime {
    driver: Arc<dyn Driver>,
    store: Arc<dyn Store>,
    ports: Arc<PortAllocator>,
    client: reqwest::Client,
    options: RuntimeOptions,
    services: tokio::sync::Mutex<IndexMap<String, Supervised>>,
    stop_on_cancel: Arc<AtomicBool>,
    /// Whether instances left by a previous control plane have been looked for.
    listed: tokio::sync::Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds from `t` to now (negative for a time ahead).
fn ms_since(t: Timestamp) -> i64 {
    i64::try_from(Timestamp::now().duration_since(t).as_millis()).unwrap_or(i64::MAX)
}

fn short_id() -> String {
    format!("{:04x}", fastrand::u16(..))
}

impl Runtime {
    /// A runtime on `driver`, recording events in `store`.
    pub fn new(driver: Arc<dyn Driver>, store: Arc<dyn Store>, options: RuntimeOptions) -> Self {
        Runtime {
            driver,
            store,
            ports: Arc::new(PortAllocator::default()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with default TLS-less settings builds"),
            options,
            services: tokio::sync::Mutex::new(IndexMap::new()),
            stop_on_cancel: Arc::new(AtomicBool::new(true)),
            listed: tokio::sync::Mutex::new(false),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Brings the environment to `env` at `release`: unchanged services keep their instances,
    /// changed ones are replaced, removed ones stopped. On the first call, instances left by
    /// a previous control plane are adopted when they still match.
    pub async fn apply(&self, env: &ResolvedEnv, release: &Release) {
        let mut found = {
            let mut listed = self.listed.lock().await;
            if *listed {
                Vec::new()
            } else {
                *listed = true;
                // Only this environment's: other environments, and the control plane's own
                // instances (the proxy), are someone else's to adopt.
                let mut all = self.driver.list().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list instances to adopt");
                    Vec::new()
                });
                all.retain(|f| f.instance.environment == env.environment);
                all
            }
        };
        let mut services = self.services.lock().await;
        let wanted: Vec<&str> = env.services.keys().map(String::as_str).collect();
        let gone: Vec<String> = services
            .keys()
            .filter(|k| !wanted.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(s) = services.shift_remove(&name) {
                self.stop_supervised(s).await;
                self.event(
                    NewEvent::info("service.removed", format!("{name} removed"))
                        .environment(&env.environment)
                        .subject(&name),
                )
                .await;
            }
        }
        for service in env.services.values() {
            let fingerprint = fingerprint(service, release, &self.options.secrets);
            if services
                .get(&service.name)
                .is_some_and(|s| s.fingerprint == fingerprint)
            {
                continue;
            }
            if let Some(old) = services.shift_remove(&service.name) {
                self.stop_supervised(old).await;
            }
            let adopt: Vec<Found> = found
                .extract_if(.., |f| {
                    f.instance.service == service.name && f.instance.environment == env.environment
                })
                .collect();
            let supervised = self
                .supervise(env, release, service, fingerprint, adopt)
                .await;
            services.insert(service.name.clone(), supervised);
        }
        // Whatever was found and belongs to no service now is cleaned up.
        for f in found {
            self.clean_up(f, "its service is no longer declared").await;
        }
    }

    async fn clean_up(&self, f: Found, why: &str) {
        let i = &f.instance;
        match f.verdict {
            Verdict::Running => {
                let _ = self
                    .driver
                    .stop(i, Default::default(), Duration::from_secs(10))
                    .await;
                self.event(
                    NewEvent::info(
                        "instance.stopped",
                        format!("stopped {} left by a previous control plane: {why}", i.id),
                    )
                    .environment(&i.environment)
                    .subject(&i.id),
                )
                .await;
            }
            Verdict::Exited(exit) => {
                self.event(
                    NewEvent::info(
                        "instance.exited",
                        format!(
                            "{} ended while the control plane was down ({})",
                            i.id,
                            exit.describe()
                        ),
                    )
                    .level(EventLevel::Warning)
                    .environment(&i.environment)
                    .subject(&i.id)
                    .data(json!({ "exit_code": exit.code, "signal": exit.signal })),
                )
                .await;
            }
            Verdict::Recycled => {
                self.event(
                    NewEvent::info(
                        "instance.lost",
                        format!(
                            "{}: pid {} now belongs to another process; not adopted, not signalled",
                            i.id, i.process.pid
                        ),
                    )
                    .level(EventLevel::Warning)
                    .environment(&i.environment)
                    .subject(&i.id)
                    .data(json!({ "pid": i.process.pid })),
                )
                .await;
            }
        }
        let _ = self.driver.remove(i).await;
    }

    async fn supervise(
        &self,
        env: &ResolvedEnv,
        release: &Release,
        service: &ResolvedService,
        fingerprint: String,
        found: Vec<Found>,
    ) -> Supervised {
        let status = Arc::new(Mutex::new(ServiceStatus {
            name: service.name.clone(),
            kind: service.kind,
            replicas: service.replicas,
            state: if service.kind == ServiceKind::Cron {
                "scheduled".into()
            } else {
                "running".into()
            },
            restarts: 0,
            last_exit: None,
            instances: Vec::new(),
            next_run: None,
            runs: Vec::new(),
        }));
        let cancel = CancellationToken::new();
        let (env_vars, secret_keys, missing) = self.compose_env(env, release, service);
        let ctx = Arc::new(Ctx {
            driver: self.driver.clone(),
            store: self.store.clone(),
            ports: self.ports.clone(),
            client: self.client.clone(),
            environment: env.environment.clone(),
            release: release.clone(),
            service: service.clone(),
            fingerprint: fingerprint.clone(),
            env: env_vars,
            secret_keys,
            logs: self.options.logs,
            status: status.clone(),
            stop_on_cancel: self.stop_on_cancel.clone(),
        });
        let mut supervised = Supervised {
            fingerprint,
            cancel: cancel.clone(),
            tasks: Vec::new(),
            status,
            run_now: None,
        };
        // Adopt what matches; clean up the rest.
        let mut adopt: IndexMap<u32, Instance> = IndexMap::new();
        for f in found {
            let matches = f.instance.fingerprint == ctx.fingerprint
                && f.instance.slot < service.replicas.max(1)
                && !adopt.contains_key(&f.instance.slot);
            if f.verdict == Verdict::Running && matches {
                if let Some(port) = f.instance.port {
                    self.ports.reserve(port);
                }
                adopt.insert(f.instance.slot, f.instance);
            } else {
                self.clean_up(f, "its service changed").await;
            }
        }
        if !missing.is_empty() {
            let message = format!(
                "{} cannot start: secret {} has no value; set it in the environment of `slipway up`",
                service.name,
                missing.join(", ")
            );
            lock(&supervised.status).state = "failed".into();
            self.event(
                NewEvent::info("service.failed", message)
                    .level(EventLevel::Error)
                    .environment(&env.environment)
                    .subject(&service.name)
                    .data(json!({ "missing_secrets": missing })),
            )
            .await;
            return supervised;
        }
        if let Err(reason) = build(&ctx, &self.options).await {
            lock(&supervised.status).state = "build-failed".into();
            ctx.event(
                NewEvent::info(
                    "build.failed",
                    format!("{} build failed: {reason}", service.name),
                )
                .level(EventLevel::Error)
                .subject(&service.name),
            )
            .await;
            return supervised;
        }
        match service.kind {
            ServiceKind::Cron => {
                let (tx, rx) = mpsc::channel(4);
                supervised.run_now = Some(tx);
                let adopted: Vec<Instance> = adopt.into_values().collect();
                supervised
                    .tasks
                    .push(tokio::spawn(run_cron(ctx, cancel, rx, adopted)));
            }
            ServiceKind::Web | ServiceKind::Worker => {
                for slot in 0..service.replicas {
                    let adopted = adopt.shift_remove(&slot);
                    supervised.tasks.push(tokio::spawn(run_slot(
                        ctx.clone(),
                        slot,
                        adopted,
                        cancel.clone(),
                    )));
                }
            }
        }
        supervised
    }

    /// project → environment → service (already merged by the spec) → secrets → injected.
    /// Returns the variables, the secret keys, and required secrets that have no value.
    fn compose_env(
        &self,
        env: &ResolvedEnv,
        release: &Release,
        service: &ResolvedService,
    ) -> (IndexMap<String, String>, Vec<String>, Vec<String>) {
        let mut vars = IndexMap::new();
        for key in ["HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
            if let Ok(v) = std::env::var(key) {
                vars.insert(key.to_string(), v);
            }
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let path = match &self.options.bin_dir {
            Some(dir) => format!("{}:{path}", dir.display()),
            None => path,
        };
        vars.insert("PATH".into(), path);
        for (k, v) in &service.env {
            vars.insert(k.clone(), v.clone());
        }
        let mut secret_keys = Vec::new();
        let mut missing = Vec::new();
        for name in &service.secrets {
            match self.options.secrets.get(name) {
                Some(value) => {
                    vars.insert(name.clone(), value.clone());
                    secret_keys.push(name.clone());
                }
                None if env.secrets.get(name).is_some_and(|s| s.required) => {
                    missing.push(name.clone());
                }
                None => {}
            }
        }
        vars.insert("SLIPWAY_SERVICE".into(), service.name.clone());
        vars.insert("SLIPWAY_ENV".into(), env.environment.clone());
        vars.insert("SLIPWAY_RELEASE".into(), release.id.clone());
        vars.insert(
            "SLIPWAY_RELEASE_DIR".into(),
            release_dir(&self.options, release, service)
                .display()
                .to_string(),
        );
        (vars, secret_keys, missing)
    }

    async fn stop_supervised(&self, s: Supervised) {
        s.cancel.cancel();
        for t in s.tasks {
            let _ = t.await;
        }
    }

    /// Stops every instance (for `slipway down`); returns when all are gone.
    pub async fn stop_all(&self) {
        let mut services = self.services.lock().await;
        let all: Vec<Supervised> = services.drain(..).map(|(_, s)| s).collect();
        for s in &all {
            s.cancel.cancel();
        }
        for s in all {
            for t in s.tasks {
                let _ = t.await;
            }
        }
    }

    /// Lets go of every instance without stopping it (the next control plane adopts them).
    pub async fn detach(&self) {
        self.stop_on_cancel.store(false, Ordering::SeqCst);
        self.stop_all().await;
    }

    /// Every supervised service.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        let services = self.services.lock().await;
        services.values().map(|s| lock(&s.status).clone()).collect()
    }

    /// Starts a run of cron service `name` now; returns the run's instance id.
    pub async fn run_now(&self, name: &str) -> Result<String, RuntimeError> {
        let sender = {
            let services = self.services.lock().await;
            let s = services
                .get(name)
                .ok_or_else(|| RuntimeError::UnknownService(name.to_string()))?;
            s.run_now
                .clone()
                .ok_or_else(|| RuntimeError::NotCron(name.to_string()))?
        };
        let (tx, rx) = oneshot::channel();
        sender
            .send(tx)
            .await
            .map_err(|_| RuntimeError::Refused(format!("{name} is shutting down")))?;
        rx.await
            .map_err(|_| RuntimeError::Refused(format!("{name} is shutting down")))?
            .map_err(RuntimeError::Refused)
    }

    /// Log records of a service, across its instances, oldest first.
    pub async fn logs(
        &self,
        service: &str,
        filter: &LogFilter,
    ) -> Result<Vec<LogRecord>, RuntimeError> {
        Ok(self.driver.logs(service, filter).await?)
    }

    async fn event(&self, event: NewEvent) {
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }
}

fn fingerprint(
    service: &ResolvedService,
    release: &Release,
    secrets: &IndexMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(service).unwrap_or_default());
    h.update(release.id.as_bytes());
    for name in &service.secrets {
        h.update(name.as_bytes());
        h.update(secrets.get(name).map(String::as_bytes).unwrap_or_default());
    }
    hex::encode(&h.finalize()[..8])
}

fn release_dir(options: &RuntimeOptions, release: &Release, service: &ResolvedService) -> PathBuf {
    options.releases_dir.join(&release.id).join(&service.name)
}

/// Runs the service's `build` once for this release, into its release directory.
async fn build(ctx: &Ctx, options: &RuntimeOptions) -> Result<(), String> {
    let Some(command) = &ctx.service.build else {
        return Ok(());
    };
    let dir = release_dir(options, &ctx.release, &ctx.service);
    let done = dir.join(".built");
    if done.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .current_dir(&ctx.service.cwd)
            .env_clear()
            .envs(&ctx.env)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "timed out after 10m".to_string())?
    .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let redactor = Redactor::new(
        ctx.secret_keys
            .iter()
            .filter_map(|k| ctx.env.get(k).cloned()),
    );
    let log = redactor.redact(&format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    let _ = std::fs::write(dir.join("build.log"), &log);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{} — {}", output.status, tail.join(" | ")));
    }
    std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    ctx.event(
        NewEvent::info(
            "release.built",
            format!(
                "{} built for release {} in {}ms",
                ctx.service.name,
                ctx.release.id,
                started.elapsed().as_millis()
            ),
        )
        .subject(&ctx.service.name),
    )
    .await;
    Ok(())
}

impl Ctx {
    async fn event(&self, event: NewEvent) {
        let event = event.environment(&self.environment);
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }

    fn spec(&self, slot: u32, id: String, port: Option<u16>) -> InstanceSpec {
        let mut env = self.env.clone();
        if let Some(port) = port {
            env.insert("PORT".into(), port.to_string());
        }
        env.insert("SLIPWAY_INSTANCE".into(), id.clone());
        let heartbeat = [&self.service.readiness, &self.service.liveness]
            .into_iter()
            .flatten()
            .find_map(|p| match &p.check {
                slipway_spec::resolve::ProbeCheck::Heartbeat { file, .. } => Some(file.clone()),
                _ => None,
            });
        InstanceSpec {
            id,
            service: self.service.name.clone(),
            environment: self.environment.clone(),
            release: self.release.id.clone(),
            slot,
            command: self.service.start.clone(),
            cwd: self.service.cwd.clone(),
            env,
            secret_keys: self.secret_keys.clone(),
            port,
            heartbeat,
            logs: self.logs,
            fingerprint: self.fingerprint.clone(),
            image: self.service.image.clone(),
            resources: self.service.resources.clone(),
        }
    }

    async fn start(&self, slot: u32, id: String) -> Result<Instance, String> {
        let port = match self.service.kind {
            ServiceKind::Web => Some(self.ports.allocate().map_err(|e| format!("no port: {e}"))?),
            _ => None,
        };
        match self.driver.start(&self.spec(slot, id, port)).await {
            Ok(instance) => {
                self.event(
                    NewEvent::info(
                        "instance.started",
                        format!(
                            "{} started (pid {}{})",
                            instance.id,
                            instance.process.pid,
                            port.map(|p| format!(", port {p}")).unwrap_or_default()
                        ),
                    )
                    .subject(&instance.id)
                    .data(json!({
                        "service": self.service.name, "pid": instance.process.pid,
                        "port": port, "release": self.release.id, "slot": slot,
                    })),
                )
                .await;
                Ok(instance)
            }
            Err(e) => {
                if let Some(p) = port {
                    self.ports.release(p);
                }
                Err(e.to_string())
            }
        }
    }

    fn set_instance(&self, slot: u32, view: Option<InstanceStatus>) {
        let mut status = lock(&self.status);
        status.instances.retain(|i| i.slot != slot);
        if let Some(view) = view {
            status.instances.push(view);
            status.instances.sort_by_key(|i| i.slot);
        }
    }

    fn update_instance(&self, id: &str, f: impl FnOnce(&mut InstanceStatus)) {
        let mut status = lock(&self.status);
        if let Some(i) = status.instances.iter_mut().find(|i| i.id == id) {
            f(i);
        }
    }

    async fn stop_instance(&self, instance: &Instance) -> Exit {
        self.update_instance(&instance.id, |i| i.state = "stopping".into());
        let exit = self
            .driver
            .stop(
                instance,
                self.service.stop_signal,
                self.service.stop_grace.std(),
            )
            .await
            .unwrap_or(Exit::vanished());
        self.event(
            NewEvent::info(
                "instance.stopped",
                format!("{} stopped ({})", instance.id, exit.describe()),
            )
            .subject(&instance.id)
            .data(json!({ "exit_code": exit.code, "signal": exit.signal })),
        )
        .await;
        exit
    }

    async fn forget(&self, instance: &Instance) {
        let _ = self.driver.remove(instance).await;
        if let Some(p) = instance.port {
            self.ports.release(p);
        }
    }
}

fn view(instance: &Instance, adopted: bool, health: Health) -> InstanceStatus {
    InstanceStatus {
        id: instance.id.clone(),
        pid: instance.process.pid,
        release: instance.release.clone(),
        slot: instance.slot,
        state: "running".into(),
        health: health.as_str().into(),
        port: instance.port,
        started_at: instance.started_at,
        adopted,
        checks: Vec::new(),
        cpu_percent: None,
        rss_bytes: None,
    }
}

enum Ended {
    Exited(Exit),
    LivenessFailed(String),
    Cancelled,
}

/// A probe with its schedule and verdict.
struct ProbeState<'a> {
    probe: &'a Probe,
    tracker: Tracker,
    next: Instant,
}

impl<'a> ProbeState<'a> {
    fn new(probe: &'a Probe) -> Self {
        ProbeState {
            probe,
            tracker: Tracker::new(probe),
            next: Instant::now(),
        }
    }

    /// Runs the check, schedules the next one, and returns the result and the new health if
    /// it changed (failures in the start period do not count).
    async fn run(
        &mut self,
        client: &reqwest::Client,
        target: &health::Target<'_>,
    ) -> (CheckResult, Option<Health>) {
        let result = health::check(client, self.probe, target).await;
        self.next = Instant::now() + self.probe.interval.std();
        let counts = target.uptime >= self.probe.start_period.std();
        let changed = self.tracker.record(result.ok, counts);
        (result, changed)
    }
}

/// Watches one instance until it ends, fails liveness, or the task is cancelled.
async fn watch(ctx: &Ctx, instance: &Instance, cancel: &CancellationToken) -> Ended {
    let started = Instant::now()
        - Duration::from_millis(u64::try_from(ms_since(instance.started_at)).unwrap_or(0));
    let mut readiness = ctx.service.readiness.as_ref().map(ProbeState::new);
    let mut liveness = ctx.service.liveness.as_ref().map(ProbeState::new);
    let mut last_usage: Option<(Instant, u64)> = None;
    let mut next_usage = Instant::now();
    let target_env = &ctx.env;
    let ended = ctx.driver.wait(instance);
    tokio::pin!(ended);
    loop {
        let due = [
            readiness.as_ref().map(|p| p.next),
            liveness.as_ref().map(|p| p.next),
            Some(next_usage),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_usage);
        tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            exit = &mut ended => {
                return Ended::Exited(exit.unwrap_or(Exit::vanished()));
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = Instant::now();
        let uptime = now.saturating_duration_since(started);
        let target = health::Target {
            port: instance.port,
            run_dir: &instance.run_dir,
            cwd: &ctx.service.cwd,
            env: target_env,
            uptime,
        };
        if let Some(p) = readiness.as_mut()
            && now >= p.next
        {
            let (result, changed) = tokio::select! {
                _ = cancel.cancelled() => return Ended::Cancelled,
                r = p.run(&ctx.client, &target) => r,
            };
            let health = p.tracker.health;
            ctx.update_instance(&instance.id, |i| {
                i.health = health.as_str().into();
                i.checks.push(result.clone());
                if i.checks.len() > KEEP_CHECKS {
                    i.checks.remove(0);
                }
            });
            match changed {
                Some(Health::Healthy) => {
                    ctx.event(
                        NewEvent::info(
                            "instance.healthy",
                            format!("{} is healthy ({})", instance.id, result.detail),
                        )
                        .subject(&instance.id),
                    )
                    .await;
                    let recovered = {
                        let mut s = lock(&ctx.status);
                        let was = s.state == "crashlooping";
                        if was {
                            s.state = "running".into();
                        }
                        was
                    };
                    if recovered {
                        ctx.event(
                            NewEvent::info(
                                "service.recovered",
                                format!("{} is no longer crash-looping", ctx.service.name),
                            )
                            .subject(&ctx.service.name),
                        )
                        .await;
                    }
                }
                Some(Health::Unhealthy) => {
                    ctx.event(
                        NewEvent::info(
                            "instance.unhealthy",
                            format!(
                                "{} is unhealthy: readiness check failed ({}); it gets no traffic",
                                instance.id, result.detail
                            ),
                        )
                        .level(EventLevel::Warning)
                        .subject(&instance.id),
                    )
                    .await;
                }
                _ => {}
            }
        }
        if let Some(p) = liveness.as_mut()
            && now >= p.next
        {
            let (result, changed) = tokio::select! {
                _ = cancel.cancelled() => return Ended::Cancelled,
                r = p.run(&ctx.client, &target) => r,
            };
            if changed == Some(Health::Unhealthy) {
                return Ended::LivenessFailed(result.detail);
            }
        }
        if now >= next_usage {
            next_usage = now + Duration::from_secs(2);
            if let Some(usage) = ctx.driver.usage(instance).await {
                let cpu = last_usage.map(|(at, ms)| {
                    let wall = now.saturating_duration_since(at).as_millis().max(1) as f64;
                    (usage.cpu_ms.saturating_sub(ms)) as f64 * 100.0 / wall
                });
                last_usage = Some((now, usage.cpu_ms));
                ctx.update_instance(&instance.id, |i| {
                    i.rss_bytes = Some(usage.rss_bytes);
                    if let Some(cpu) = cpu {
                        i.cpu_percent = Some((cpu * 10.0).round() / 10.0);
                    }
                });
            }
        }
    }
}

/// One replica slot of a web or worker service.
async fn run_slot(ctx: Arc<Ctx>, slot: u32, adopted: Option<Instance>, cancel: CancellationToken) {
    let mut adopted = adopted;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut consecutive: u32 = 0;
    let mut retries: u32 = 0;
    loop {
        let (instance, was_adopted) = match adopted.take() {
            Some(i) => {
                ctx.event(
                    NewEvent::info(
                        "instance.adopted",
                        format!(
                            "{} re-adopted (pid {}, started {})",
                            i.id, i.process.pid, i.started_at
                        ),
                    )
                    .subject(&i.id)
                    .data(json!({ "pid": i.process.pid, "port": i.port })),
                )
                .await;
                (i, true)
            }
            None => {
                let id = format!("{}-{slot}-{}", ctx.service.name, short_id());
                match ctx.start(slot, id.clone()).await {
                    Ok(i) => (i, false),
                    Err(reason) => {
                        ctx.event(
                            NewEvent::info(
                                "instance.failed",
                                format!("{id} did not start: {reason}"),
                            )
                            .level(EventLevel::Error)
                            .subject(&id),
                        )
                        .await;
                        lock(&ctx.status).last_exit = Some(reason.clone());
                        let Some(delay) = next_backoff(
                            &ctx,
                            &mut recent,
                            &mut consecutive,
                            &mut retries,
                            None,
                            &reason,
                        )
                        .await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        let health = if ctx.service.readiness.is_some() {
            Health::Starting
        } else {
            Health::None
        };
        ctx.set_instance(slot, Some(view(&instance, was_adopted, health)));
        let ended = watch(&ctx, &instance, &cancel).await;
        let uptime = ms_since(instance.started_at).max(0);
        let (exit, reason) = match ended {
            Ended::Cancelled => {
                if ctx.stop_on_cancel.load(Ordering::SeqCst) {
                    ctx.stop_instance(&instance).await;
                    ctx.forget(&instance).await;
                }
                ctx.set_instance(slot, None);
                return;
            }
            Ended::LivenessFailed(detail) => {
                ctx.event(
                    NewEvent::info(
                        "instance.unhealthy",
                        format!(
                            "{} failed its liveness check ({detail}); restarting it",
                            instance.id
                        ),
                    )
                    .level(EventLevel::Warning)
                    .subject(&instance.id),
                )
                .await;
                let exit = ctx.stop_instance(&instance).await;
                (Some(exit), format!("liveness check failed: {detail}"))
            }
            Ended::Exited(exit) => {
                ctx.event(
                    NewEvent::info(
                        "instance.exited",
                        format!("{} exited: {}", instance.id, exit.describe()),
                    )
                    .level(if exit.success() {
                        EventLevel::Info
                    } else {
                        EventLevel::Warning
                    })
                    .subject(&instance.id)
                    .data(json!({
                        "exit_code": exit.code, "signal": exit.signal,
                        "uptime_ms": uptime, "pid": instance.process.pid,
                    })),
                )
                .await;
                (Some(exit), exit.describe())
            }
        };
        ctx.forget(&instance).await;
        ctx.set_instance(slot, None);
        lock(&ctx.status).last_exit = Some(reason.clone());
        if uptime >= i64::try_from(STABLE_AFTER.as_millis()).unwrap_or(i64::MAX) {
            consecutive = 0;
        }
        let Some(delay) = next_backoff(
            &ctx,
            &mut recent,
            &mut consecutive,
            &mut retries,
            exit,
            &reason,
        )
        .await
        else {
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Decides whether and when to restart; `None` means the slot stays empty.
async fn next_backoff(
    ctx: &Ctx,
    recent: &mut VecDeque<Instant>,
    consecutive: &mut u32,
    retries: &mut u32,
    exit: Option<Exit>,
    reason: &str,
) -> Option<Duration> {
    use slipway_spec::model::RestartPolicy;
    let restart = &ctx.service.restart;
    let clean = exit.is_some_and(|e| e.success());
    let policy_says = match restart.policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !clean,
        RestartPolicy::Never => false,
    };
    if !policy_says {
        lock(&ctx.status).state = if clean { "completed" } else { "failed" }.into();
        return None;
    }
    if restart.max_retries.is_some_and(|max| *retries >= max) {
        lock(&ctx.status).state = "failed".into();
        ctx.event(
            NewEvent::info(
                "service.failed",
                format!(
                    "{} gave up after {} restarts ({reason})",
                    ctx.service.name, retries
                ),
            )
            .level(EventLevel::Error)
            .subject(&ctx.service.name),
        )
        .await;
        return None;
    }
    *retries += 1;
    *consecutive += 1;
    let now = Instant::now();
    recent.push_back(now);
    let window = restart.crashloop_window.std();
    while recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > window)
    {
        recent.pop_front();
    }
    let base = restart.backoff.std();
    let exponent = (*consecutive - 1).min(20);
    let delay = base
        .saturating_mul(1u32 << exponent)
        .min(restart.max_backoff.std());
    let newly_looping = {
        let mut s = lock(&ctx.status);
        s.restarts += 1;
        let looping = recent.len() >= restart.crashloop_restarts.max(1) as usize;
        let newly = looping && s.state != "crashlooping";
        if newly {
            s.state = "crashlooping".into();
        }
        newly
    };
    if newly_looping {
        ctx.event(
            NewEvent::info(
                "service.crashlooping",
                format!(
                    "{} is crash-looping: {} restarts in {}; backing off up to {}",
                    ctx.service.name,
                    recent.len(),
                    restart.crashloop_window,
                    restart.max_backoff
                ),
            )
            .level(EventLevel::Error)
            .subject(&ctx.service.name)
            .data(json!({ "restarts": recent.len(), "last_reason": reason })),
        )
        .await;
    }
    ctx.event(
        NewEvent::info(
            "instance.restarting",
            format!(
                "restarting a {} instance in {}ms ({reason})",
                ctx.service.name,
                delay.as_millis()
            ),
        )
        .subject(&ctx.service.name)
        .data(json!({
            "reason": reason, "backoff_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "attempt": *retries,
        })),
    )
    .await;
    Some(delay)
}

/// A cron service: runs on its schedule, or when asked.
async fn run_cron(
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    mut run_now: mpsc::Receiver<oneshot::Sender<Result<String, String>>>,
    adopted: Vec<Instance>,
) {
    let Some(schedule) = ctx.service.cron.clone() else {
        return;
    };
    let active: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut runs = Vec::new();
    for instance in adopted {
        lock(&active).push(instance.id.clone());
        runs.push(tokio::spawn(cron_run(
            ctx.clone(),
            instance,
            "schedule",
            cancel.clone(),
            active.clone(),
        )));
    }
    let cron: Option<croner::Cron> = schedule.schedule.parse().ok();
    let tz = jiff::tz::TimeZone::get(&schedule.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let mut counter = 0u32;
    loop {
        let next = cron.as_ref().and_then(|c| {
            c.find_next_occurrence(&jiff::Zoned::now().with_time_zone(tz.clone()), false)
                .ok()
        });
        lock(&ctx.status).next_run = next.as_ref().map(jiff::Zoned::timestamp);
        let wait = next.as_ref().map_or(Duration::from_secs(3600), |n| {
            (-ms_since(n.timestamp()))
                .try_into()
                .map(Duration::from_millis)
                .unwrap_or_default()
        });
        let trigger: (
            &'static str,
            Option<oneshot::Sender<Result<String, String>>>,
        ) = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait), if next.is_some() => ("schedule", None),
            asked = run_now.recv() => match asked {
                Some(reply) => ("manual", Some(reply)),
                None => break,
            },
        };
        let (why, reply) = trigger;
        runs.retain(|r: &JoinHandle<()>| !r.is_finished());
        let busy = !lock(&active).is_empty();
        if busy && schedule.concurrency == slipway_spec::model::CronConcurrency::Forbid {
            let message = format!(
                "{} run skipped: the previous run is still going (concurrency = \"forbid\")",
                ctx.service.name
            );
            ctx.event(
                NewEvent::info("cron.skipped", message.clone())
                    .level(EventLevel::Warning)
                    .subject(&ctx.service.name),
            )
            .await;
            if let Some(reply) = reply {
                let _ = reply.send(Err(message));
            }
            continue;
        }
        counter += 1;
        let id = format!("{}-{}-{}", ctx.service.name, counter, short_id());
        match ctx.start(counter, id.clone()).await {
            Ok(instance) => {
                lock(&active).push(id.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(id));
                }
                runs.push(tokio::spawn(cron_run(
                    ctx.clone(),
                    instance,
                    why,
                    cancel.clone(),
                    active.clone(),
                )));
            }
            Err(reason) => {
                ctx.event(
                    NewEvent::info("cron.failed", format!("{id} did not start: {reason}"))
                        .level(EventLevel::Error)
                        .subject(&ctx.service.name),
                )
                .await;
                if let Some(reply) = reply {
                    let _ = reply.send(Err(reason));
                }
            }
        }
    }
    for r in runs {
        let _ = r.await;
    }
}

async fn cron_run(
    ctx: Arc<Ctx>,
    instance: Instance,
    trigger: &'static str,
    cancel: CancellationToken,
    active: Arc<Mutex<Vec<String>>>,
) {
    let started = instance.started_at;
    {
        let mut s = lock(&ctx.status);
        s.runs.push(CronRun {
            id: instance.id.clone(),
            trigger: trigger.into(),
            started_at: started,
            finished_at: None,
            exit_code: None,
            outcome: "running".into(),
            duration_ms: None,
        });
        if s.runs.len() > KEEP_RUNS {
            s.runs.remove(0);
        }
        s.instances.push(view(&instance, false, Health::None));
    }
    ctx.event(
        NewEvent::info(
            "cron.started",
            format!(
                "{} run {} started ({trigger})",
                ctx.service.name, instance.id
            ),
        )
        .subject(&ctx.service.name)
        .data(json!({ "run": instance.id, "trigger": trigger })),
    )
    .await;
    let timeout = ctx.service.cron.as_ref().and_then(|c| c.timeout);
    let deadline = timeout.map(|t| Instant::now() + t.std());
    let mut timed_out = false;
    let ended = ctx.driver.wait(&instance);
    tokio::pin!(ended);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let exit = tokio::select! {
        _ = cancel.cancelled() => {
            if !ctx.stop_on_cancel.load(Ordering::SeqCst) {
                lock(&active).retain(|a| a != &instance.id);
                return;
            }
            ctx.stop_instance(&instance).await
        }
        exit = &mut ended => exit.unwrap_or(Exit::vanished()),
        _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
            timed_out = true;
            ctx.stop_instance(&instance).await
        }
    };
    let finished = Timestamp::now();
    let duration_ms = u64::try_from(finished.duration_since(started).as_millis()).unwrap_or(0);
    let outcome = if timed_out {
        "timed-out"
    } else if exit.success() {
        "succeeded"
    } else {
        "failed"
    };
    {
        let mut s = lock(&ctx.status);
        if let Some(run) = s.runs.iter_mut().find(|r| r.id == instance.id) {
            run.finished_at = Some(finished);
            run.exit_code = exit.code;
            run.outcome = outcome.into();
            run.duration_ms = Some(duration_ms);
        }
        s.instances.retain(|i| i.id != instance.id);
        s.last_exit = Some(exit.describe());
    }
    ctx.event(
        NewEvent::info(
            "cron.finished",
            format!(
                "{} run {} {outcome} ({}) in {duration_ms}ms",
                ctx.service.name,
                instance.id,
                exit.describe()
            ),
        )
        .level(if outcome == "succeeded" {
            EventLevel::Info
        } else {
            EventLevel::Warning
        })
        .subject(&ctx.service.name)
        .data(json!({
            "run": instance.id, "exit_code": exit.code, "signal": exit.signal,
            "duration_ms": duration_ms, "outcome": outcome, "trigger": trigger,
        })),
    )
    .await;
    ctx.forget(&instance).await;
    lock(&active).retain(|a| a != &instance.id);
}
