//! Supervision: keeps each service of an environment at its declared shape through a driver.
//!
//! The unit is a *set*: the instances of one service at one release. A service normally has
//! one set; during a deploy it has two (the release going out and the one coming in), which
//! the deploy engine scales, marks for retirement and removes one step at a time. Every replica
//! slot of a web or worker set has a task that starts (or adopts) an instance, runs its
//! readiness and liveness checks, and restarts it by its restart policy with exponential
//! backoff, marking the service `crashlooping` when restarts pile up. A cron set has one task
//! that starts runs on its schedule. Every transition is an event in the store.
//!
//! Instances a previous control plane left running are claimed by the first [`Runtime::ensure`]
//! of their set (same service, release and fingerprint); [`Runtime::release_unclaimed`] stops
//! the rest once the caller has ensured every set it wants.
//!
//! The supervisor can let go in two ways: [`Runtime::stop_all`] stops every instance
//! (`slipway down`), [`Runtime::detach`] leaves them running for the next control plane to
//! adopt (the daemon exiting or being upgraded).

mod cron;
mod slot;

use std::collections::HashSet;
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
use slipway_spec::resolve::{ResolvedEnv, ResolvedService};
use slipway_store::{EventLevel, NewEvent, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, Found, Instance, LogPolicy, Verdict};
use crate::health::CheckResult;
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
    /// Main pid (none while its slot waits to restart it).
    pub pid: Option<u32>,
    /// Release.
    pub release: String,
    /// Slot.
    pub slot: u32,
    /// `running`, `retiring`, `stopping`, or `restarting` (the slot waits out its backoff;
    /// `id` is then the instance that ended).
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
    /// Each release's set: instances wanted and ready.
    #[serde(default)]
    pub sets: Vec<SetReadiness>,
}

/// An instance's metrics endpoint, for the scraper.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeEndpoint {
    /// Service.
    pub service: String,
    /// Release.
    pub release: String,
    /// Instance id.
    pub instance: String,
    /// What to scrape.
    pub url: String,
    /// How often.
    pub interval: std::time::Duration,
}

/// One set of a service in [`ServiceStatus`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetReadiness {
    /// Release.
    pub release: String,
    /// Instances it should have.
    pub replicas: u32,
    /// Instances that are running, healthy and not retiring.
    pub ready: u32,
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

/// The instances of one service at one release.
struct Set {
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    slots: IndexMap<u32, SlotTask>,
    cron: Option<CronTask>,
}

/// A removed cron set whose runs may still be going.
struct RetiredCron {
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct SlotTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct CronTask {
    /// Stops scheduling; runs already going finish.
    retire: CancellationToken,
    task: JoinHandle<()>,
    run_now: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
}

/// Shared by a set's tasks.
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
    /// The service's cron runs, newest last: shared by every set of the service, so the
    /// history outlives a deploy or a rollback.
    history: Arc<Mutex<Vec<CronRun>>>,
    /// Slots whose instance gets no new traffic (the deploy engine drains them).
    retiring: Mutex<HashSet<u32>>,
    /// Stop instances when cancelled (false: leave them for the next control plane).
    stop_on_cancel: Arc<AtomicBool>,
}

/// A set as the deploy engine sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetStatus {
    /// Service.
    pub service: String,
    /// Release.
    pub release: String,
    /// Instances it should have.
    pub replicas: u32,
    /// Instances that are running, healthy and not retiring.
    pub ready: u32,
    /// Why it cannot run at all (a failed build, a missing secret).
    pub failed: Option<String>,
    /// `running`, `crashlooping` (restarts pile up), `failed` (its restart policy gave up),
    /// `completed`, `scheduled` (cron).
    #[serde(default)]
    pub state: String,
    /// How its last instance ended.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Its live instances.
    pub instances: Vec<InstanceStatus>,
}

/// See the module docs.
pub struct Runtime {
    driver: Arc<dyn Driver>,
    store: Arc<dyn Store>,
    ports: Arc<PortAllocator>,
    client: reqwest::Client,
    options: RuntimeOptions,
    environment: String,
    sets: tokio::sync::Mutex<IndexMap<(String, String), Set>>,
    /// Cron schedulers of removed sets whose runs are still going (with their view, so the
    /// runs still show).
    retired_cron: Mutex<Vec<RetiredCron>>,
    /// Cron run history per service.
    cron_history: Mutex<IndexMap<String, Arc<Mutex<Vec<CronRun>>>>>,
    /// Failed sets, by (service, release): why.
    failed: Mutex<IndexMap<(String, String), (ServiceStatus, String)>>,
    stop_on_cancel: Arc<AtomicBool>,
    /// Instances a previous control plane left, not yet claimed (`None`: not listed yet).
    found: tokio::sync::Mutex<Option<Vec<Found>>>,
    /// Builds run one at a time (and never under the sets lock).
    building: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds from `t` to now (negative for a time ahead).
fn ms_since(t: Timestamp) -> i64 {
    i64::try_from(Timestamp::now().duration_since(t).as_millis()).unwrap_or(i64::MAX)
}

/// Instances that are running, healthy and not retiring.
fn ready_count(instances: &[InstanceStatus]) -> u32 {
    instances
        .iter()
        .filter(|i| i.state == "running" && i.health == "healthy")
        .count() as u32
}

fn short_id() -> String {
    format!("{:04x}", fastrand::u16(..))
}

fn key(service: &str, release: &str) -> (String, String) {
    (service.to_string(), release.to_string())
}

fn fresh_status(service: &ResolvedService) -> ServiceStatus {
    ServiceStatus {
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
        sets: Vec::new(),
    }
}

impl Runtime {
    /// A runtime for `environment` on `driver`, recording events in `store`.
    pub fn new(
        driver: Arc<dyn Driver>,
        store: Arc<dyn Store>,
        options: RuntimeOptions,
        environment: &str,
    ) -> Self {
        Runtime {
            driver,
            store,
            ports: Arc::new(PortAllocator::default()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with default TLS-less settings builds"),
            options,
            environment: environment.to_string(),
            sets: tokio::sync::Mutex::new(IndexMap::new()),
            retired_cron: Mutex::new(Vec::new()),
            cron_history: Mutex::new(IndexMap::new()),
            failed: Mutex::new(IndexMap::new()),
            stop_on_cancel: Arc::new(AtomicBool::new(true)),
            found: tokio::sync::Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Makes the set of `service` at `release` exist with `replicas` instances: creates it
    /// (building the release once, claiming instances a previous control plane left), or
    /// scales it (stopping the highest slots first). Returns once the tasks run; readiness is
    /// in [`sets`](Self::sets).
    pub async fn ensure(
        &self,
        env: &ResolvedEnv,
        release: &Release,
        service: &str,
        replicas: u32,
    ) -> Result<(), RuntimeError> {
        let spec = env
            .services
            .get(service)
            .ok_or_else(|| RuntimeError::UnknownService(service.to_string()))?;
        let k = key(service, &release.id);
        let fingerprint = fingerprint(spec, release, &self.options.secrets);
        let existing = self
            .sets
            .lock()
            .await
            .get(&k)
            .map(|s| s.ctx.fingerprint.clone());
        match existing {
            Some(f) if f == fingerprint => {}
            Some(_) => {
                // The same release id with another spec: only the legacy whole-environment
                // path does that; replace the set.
                self.remove(service, &release.id).await;
                self.create(env, release, spec, fingerprint).await?;
            }
            None => self.create(env, release, spec, fingerprint).await?,
        }
        let mut sets = self.sets.lock().await;
        let set = sets
            .get_mut(&k)
            .ok_or_else(|| RuntimeError::Refused(format!("{service} was removed meanwhile")))?;
        let stopping = self.scale_set(set, replicas).await;
        drop(sets);
        for slot in stopping {
            let _ = slot.task.await;
        }
        Ok(())
    }

    async fn create(
        &self,
        env: &ResolvedEnv,
        release: &Release,
        spec: &ResolvedService,
        fingerprint: String,
    ) -> Result<(), RuntimeError> {
        let k = key(&spec.name, &release.id);
        let status = Arc::new(Mutex::new(fresh_status(spec)));
        let (env_vars, secret_keys, missing) = compose_env(&self.options, env, release, spec);
        let history = lock(&self.cron_history)
            .entry(spec.name.clone())
            .or_default()
            .clone();
        let ctx = Arc::new(Ctx {
            driver: self.driver.clone(),
            store: self.store.clone(),
            ports: self.ports.clone(),
            client: self.client.clone(),
            environment: env.environment.clone(),
            release: release.clone(),
            service: spec.clone(),
            fingerprint,
            env: env_vars,
            secret_keys,
            logs: self.options.logs,
            status: status.clone(),
            history,
            retiring: Mutex::new(HashSet::new()),
            stop_on_cancel: self.stop_on_cancel.clone(),
        });
        let failure = if missing.is_empty() {
            let _one_at_a_time = self.building.lock().await;
            build(&ctx, &self.options).await.err().map(|reason| {
                (
                    "build-failed",
                    "build.failed",
                    format!("{} build failed: {reason}", spec.name),
                )
            })
        } else {
            Some((
                "failed",
                "service.failed",
                format!(
                    "{} cannot start: secret {} has no value; set it in the environment of `slipway up`",
                    spec.name,
                    missing.join(", ")
                ),
            ))
        };
        if let Some((state, kind, message)) = failure {
            lock(&status).state = state.into();
            ctx.event(
                NewEvent::info(kind, message.clone())
                    .level(EventLevel::Error)
                    .subject(&spec.name)
                    .data(json!({ "missing_secrets": missing, "release": release.id })),
            )
            .await;
            lock(&self.failed).insert(k, (lock(&status).clone(), message.clone()));
            return Err(RuntimeError::Refused(message));
        }
        lock(&self.failed).shift_remove(&k);
        let mut set = Set {
            ctx: ctx.clone(),
            cancel: CancellationToken::new(),
            slots: IndexMap::new(),
            cron: None,
        };
        if spec.kind == ServiceKind::Cron {
            let adopted: Vec<Instance> = self
                .claim(&ctx, |_| true)
                .await
                .into_iter()
                .map(|f| f.instance)
                .collect();
            let (tx, rx) = mpsc::channel(4);
            let retire = set.cancel.child_token();
            set.cron = Some(CronTask {
                retire: retire.clone(),
                task: tokio::spawn(cron::run_cron(
                    ctx.clone(),
                    set.cancel.clone(),
                    retire,
                    rx,
                    adopted,
                )),
                run_now: tx,
            });
        }
        self.sets.lock().await.insert(k, set);
        Ok(())
    }

    /// Found instances of this set's service, release and fingerprint, for which `take` says
    /// yes; removed from the found list.
    async fn claim(&self, ctx: &Ctx, mut take: impl FnMut(&Found) -> bool) -> Vec<Found> {
        let mut found = self.found.lock().await;
        if found.is_none() {
            // Only this environment's: other environments, and the control plane's own
            // instances (the proxy), are someone else's to adopt.
            let mut all = self.driver.list().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list instances to adopt");
                Vec::new()
            });
            all.retain(|f| f.instance.environment == self.environment);
            *found = Some(all);
        }
        let list = found.as_mut().expect("listed above");
        let mut claimed = Vec::new();
        let mut i = 0;
        while i < list.len() {
            let f = &list[i];
            if f.verdict == Verdict::Running
                && f.instance.service == ctx.service.name
                && f.instance.release == ctx.release.id
                && f.instance.fingerprint == ctx.fingerprint
                && take(f)
            {
                let f = list.remove(i);
                if let Some(port) = f.instance.port {
                    self.ports.reserve(port);
                }
                claimed.push(f);
            } else {
                i += 1;
            }
        }
        claimed
    }

    /// Starts slot tasks up to `replicas` and cancels those above; returns the cancelled ones
    /// to await outside the lock.
    async fn scale_set(&self, set: &mut Set, replicas: u32) -> Vec<SlotTask> {
        if set.ctx.service.kind == ServiceKind::Cron {
            return Vec::new();
        }
        for slot in 0..replicas {
            if set.slots.contains_key(&slot) {
                continue;
            }
            let adopted = self
                .claim(&set.ctx, |f| f.instance.slot == slot)
                .await
                .into_iter()
                .next()
                .map(|f| f.instance);
            lock(&set.ctx.retiring).remove(&slot);
            let cancel = set.cancel.child_token();
            let task = tokio::spawn(slot::run_slot(
                set.ctx.clone(),
                slot,
                adopted,
                cancel.clone(),
            ));
            set.slots.insert(slot, SlotTask { cancel, task });
        }
        let above: Vec<u32> = set
            .slots
            .keys()
            .copied()
            .filter(|s| *s >= replicas)
            .collect();
        let mut stopping = Vec::new();
        for slot in above {
            if let Some(t) = set.slots.shift_remove(&slot) {
                t.cancel.cancel();
                stopping.push(t);
            }
        }
        set.slots.sort_keys();
        lock(&set.ctx.status).replicas = replicas;
        stopping
    }

    /// Marks the instances of slots `from..` of a set as retiring: they keep running but get
    /// no new traffic, so they can drain before [`ensure`](Self::ensure) scales them away.
    pub async fn retire_from(&self, service: &str, release: &str, from: u32) {
        let sets = self.sets.lock().await;
        let Some(set) = sets.get(&key(service, release)) else {
            return;
        };
        let slots: Vec<u32> = set.slots.keys().copied().filter(|s| *s >= from).collect();
        lock(&set.ctx.retiring).extend(slots.iter().copied());
        let mut status = lock(&set.ctx.status);
        for i in status.instances.iter_mut() {
            if i.slot >= from {
                i.state = "retiring".into();
            }
        }
    }

    /// Removes a set: every instance is stopped (a cron set stops scheduling and lets its
    /// runs finish). Returns when its instances are gone.
    pub async fn remove(&self, service: &str, release: &str) {
        lock(&self.failed).shift_remove(&key(service, release));
        let Some(set) = self.sets.lock().await.shift_remove(&key(service, release)) else {
            return;
        };
        if let Some(cron) = set.cron {
            cron.retire.cancel();
            let mut retired = lock(&self.retired_cron);
            retired.retain(|r| !r.task.is_finished());
            retired.push(RetiredCron {
                ctx: set.ctx.clone(),
                cancel: set.cancel.clone(),
                task: cron.task,
            });
            return;
        }
        set.cancel.cancel();
        for (_, t) in set.slots {
            let _ = t.task.await;
        }
    }

    /// Stops instances a previous control plane left that no set claimed.
    pub async fn release_unclaimed(&self) {
        let left = match self.found.lock().await.as_mut() {
            Some(list) => std::mem::take(list),
            None => Vec::new(),
        };
        for f in left {
            self.clean_up(f, "no release of the environment needs it")
                .await;
        }
    }

    /// Every set, by service then release.
    pub async fn sets(&self) -> Vec<SetStatus> {
        let sets = self.sets.lock().await;
        let mut out: Vec<SetStatus> = sets
            .iter()
            .map(|((service, release), set)| {
                let status = lock(&set.ctx.status);
                let ready = ready_count(&status.instances);
                SetStatus {
                    service: service.clone(),
                    release: release.clone(),
                    replicas: status.replicas,
                    ready,
                    failed: None,
                    state: status.state.clone(),
                    last_exit: status.last_exit.clone(),
                    instances: status.instances.clone(),
                }
            })
            .collect();
        for ((service, release), (status, why)) in lock(&self.failed).iter() {
            out.push(SetStatus {
                service: service.clone(),
                release: release.clone(),
                replicas: status.replicas,
                ready: 0,
                failed: Some(why.clone()),
                state: status.state.clone(),
                last_exit: status.last_exit.clone(),
                instances: Vec::new(),
            });
        }
        out.sort_by(|a, b| (&a.service, &a.release).cmp(&(&b.service, &b.release)));
        out
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

    /// Stops every instance (for `slipway down`); returns when all are gone.
    pub async fn stop_all(&self) {
        let all: Vec<Set> = self.sets.lock().await.drain(..).map(|(_, s)| s).collect();
        let retired: Vec<RetiredCron> = lock(&self.retired_cron).drain(..).collect();
        for s in &all {
            s.cancel.cancel();
        }
        for r in &retired {
            r.cancel.cancel();
        }
        for s in all {
            for (_, t) in s.slots {
                let _ = t.task.await;
            }
            if let Some(c) = s.cron {
                let _ = c.task.await;
            }
        }
        for r in retired {
            let _ = r.task.await;
        }
    }

    /// Lets go of every instance without stopping it (the next control plane adopts them).
    pub async fn detach(&self) {
        self.stop_on_cancel.store(false, Ordering::SeqCst);
        self.stop_all().await;
    }

    /// Every service, its sets merged: instances of every release, by release then slot.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        let sets = self.sets.lock().await;
        let mut out: IndexMap<String, ServiceStatus> = IndexMap::new();
        for ((service, release), set) in sets.iter() {
            let mut s = lock(&set.ctx.status).clone();
            s.sets = vec![SetReadiness {
                release: release.clone(),
                replicas: s.replicas,
                ready: ready_count(&s.instances),
            }];
            match out.get_mut(service) {
                None => {
                    out.insert(service.clone(), s);
                }
                Some(merged) => {
                    merged.instances.extend(s.instances);
                    merged.sets.extend(s.sets);
                    merged.restarts += s.restarts;
                    // The newest set's view of the service wins (declared shape, state).
                    merged.replicas = s.replicas;
                    if s.state != "running" || merged.state == "running" {
                        merged.state = s.state;
                    }
                    if s.last_exit.is_some() {
                        merged.last_exit = s.last_exit;
                    }
                    if s.next_run.is_some() {
                        merged.next_run = s.next_run;
                    }
                }
            }
        }
        for ((service, _), (status, _)) in lock(&self.failed).iter() {
            if !out.contains_key(service) {
                out.insert(service.clone(), status.clone());
            }
        }
        // Runs of a removed cron set that are still going show with the service.
        for retired in lock(&self.retired_cron).iter() {
            let name = &retired.ctx.service.name;
            let going = lock(&retired.ctx.status).instances.clone();
            if let Some(s) = out.get_mut(name) {
                s.instances.extend(going);
            }
        }
        for (name, history) in lock(&self.cron_history).iter() {
            if let Some(s) = out.get_mut(name) {
                s.runs = lock(history).clone();
            }
        }
        out.into_values()
            .map(|mut s| {
                s.instances
                    .sort_by(|a, b| (&a.release, a.slot).cmp(&(&b.release, b.slot)));
                s.runs.sort_by_key(|r| r.started_at);
                s
            })
            .collect()
    }

    /// Where the instances of services with `metrics` expose them, now.
    pub async fn scrape_endpoints(&self) -> Vec<ScrapeEndpoint> {
        let sets = self.sets.lock().await;
        let mut out = Vec::new();
        for ((service, release), set) in sets.iter() {
            let Some(m) = &set.ctx.service.metrics else {
                continue;
            };
            for i in lock(&set.ctx.status).instances.iter() {
                if i.state != "running" && i.state != "retiring" {
                    continue;
                }
                let Some(port) = m.port.or(i.port) else {
                    continue;
                };
                out.push(ScrapeEndpoint {
                    service: service.clone(),
                    release: release.clone(),
                    instance: i.id.clone(),
                    url: format!("http://127.0.0.1:{port}{}", m.path),
                    interval: m.interval.std(),
                });
            }
        }
        out
    }

    /// Starts a run of cron service `name` now; returns the run's instance id.
    pub async fn run_now(&self, name: &str) -> Result<String, RuntimeError> {
        let sender = {
            let sets = self.sets.lock().await;
            let mut of_service = sets.iter().filter(|((s, _), _)| s == name).peekable();
            if of_service.peek().is_none() {
                return Err(RuntimeError::UnknownService(name.to_string()));
            }
            of_service
                .filter_map(|(_, set)| set.cron.as_ref().map(|c| c.run_now.clone()))
                .next_back()
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

    /// The last `lines` lines the instances of one set wrote, oldest first (secret values are
    /// redacted when stored): what a person needs to see when the set cannot start.
    pub async fn recent_output(&self, service: &str, release: &str, lines: usize) -> Vec<String> {
        let prefix = format!("{service}-{release}-");
        let filter = LogFilter {
            limit: Some(lines.saturating_mul(20).max(200)),
            ..LogFilter::default()
        };
        let Ok(records) = self.driver.logs(service, &filter).await else {
            return Vec::new();
        };
        let mine: Vec<String> = records
            .into_iter()
            .filter(|r| r.instance.starts_with(&prefix))
            .map(|r| r.message)
            .collect();
        mine[mine.len().saturating_sub(lines)..].to_vec()
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

/// project → environment → service (already merged by the spec) → secrets → injected.
/// Returns the variables, the secret keys, and required secrets that have no value.
pub(crate) fn compose_env(
    options: &RuntimeOptions,
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
    let path = match &options.bin_dir {
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
        match options.secrets.get(name) {
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
    vars.insert("SLIPWAY_VERSION".into(), release.version.clone());
    vars.insert(
        "SLIPWAY_RELEASE_DIR".into(),
        release_dir(options, &env.environment, release, service)
            .display()
            .to_string(),
    );
    (vars, secret_keys, missing)
}

/// The variables an instance of `service` at `release` gets, with the names of those that are
/// secret (for a one-shot command such as the release command, run the same way).
pub fn environment_of(
    options: &RuntimeOptions,
    env: &ResolvedEnv,
    release: &Release,
    service: &ResolvedService,
) -> Result<(IndexMap<String, String>, Vec<String>), RuntimeError> {
    let (vars, secret_keys, missing) = compose_env(options, env, release, service);
    if !missing.is_empty() {
        return Err(RuntimeError::Refused(format!(
            "secret {} has no value; set it in the environment of `slipway up`",
            missing.join(", ")
        )));
    }
    Ok((vars, secret_keys))
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

/// Where a release's build output for a service goes: `releases/ENV/RELEASE/SERVICE`.
pub fn release_dir(
    options: &RuntimeOptions,
    environment: &str,
    release: &Release,
    service: &ResolvedService,
) -> PathBuf {
    options
        .releases_dir
        .join(environment)
        .join(&release.id)
        .join(&service.name)
}

/// Runs the service's `build` once for this release, into its release directory.
async fn build(ctx: &Ctx, options: &RuntimeOptions) -> Result<(), String> {
    let Some(command) = &ctx.service.build else {
        return Ok(());
    };
    let dir = release_dir(options, &ctx.environment, &ctx.release, &ctx.service);
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
