//! One deployment being carried out: its state machine (persisted before each step is acted
//! on), its controls, and the helpers every strategy uses — bring a set up and wait for it to
//! be ready, move traffic, wait for removed instances to drain, read the proxy's counts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use slipway_proxy::Track;
use slipway_proxy::metrics::Counts;
use slipway_runtime::Release;
use slipway_spec::resolve::ResolvedService;
use slipway_store::{DeploymentUpdate, EnvironmentState, EventLevel, NewEvent, Store, StoreError};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::platform::{Platform, ServiceTraffic};
use crate::record::{DeploymentState, ServiceProgress, status};
use crate::release::{ReleaseSnapshot, release_id};

/// How often the engine looks at sets and the proxy while it waits.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// A release with what it runs.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    pub(crate) number: i64,
    pub(crate) release: Release,
    pub(crate) snapshot: ReleaseSnapshot,
}

impl Loaded {
    pub(crate) fn new(record: &slipway_store::ReleaseRecord) -> Result<Self, String> {
        let snapshot: ReleaseSnapshot = serde_json::from_value(record.snapshot.clone())
            .map_err(|e| format!("release r{} cannot be read: {e}", record.number))?;
        Ok(Loaded {
            number: record.number,
            release: Release {
                id: release_id(record.number),
                version: record.version.clone(),
            },
            snapshot,
        })
    }

    pub(crate) fn service(&self, name: &str) -> Option<&ResolvedService> {
        self.snapshot.config.services.get(name)
    }
}

/// What people ask of a running deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Controls {
    /// `slipway pause` (cleared by `resume` or `promote`).
    pub(crate) paused: bool,
    /// Bumped by every `slipway promote`.
    pub(crate) promotions: u64,
    /// `promote --full`.
    pub(crate) full: bool,
    /// `slipway abort`, with its reason.
    pub(crate) abort: Option<String>,
    /// When the abort was asked for (Unix milliseconds).
    pub(crate) abort_at_ms: Option<i64>,
}

/// Why a deployment stopped moving forward.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Something failed or was refused: roll back with this reason.
    Failed(String),
    /// The control plane is shutting down: leave everything as persisted.
    Shutdown,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(format!("the state store failed: {e}"))
    }
}

/// See the module docs.
pub(crate) struct Run {
    pub(crate) id: i64,
    pub(crate) kind: String,
    pub(crate) environment: String,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) platform: Arc<dyn Platform>,
    pub(crate) new: Loaded,
    pub(crate) old: Option<Loaded>,
    pub(crate) state: Mutex<DeploymentState>,
    pub(crate) status: Mutex<String>,
    pub(crate) controls: watch::Receiver<Controls>,
    /// The daemon is stopping.
    pub(crate) shutdown: CancellationToken,
    /// Another service of this deployment failed: stop moving.
    pub(crate) halt: CancellationToken,
    pub(crate) started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Run {
    /// A copy of the state.
    pub(crate) fn state(&self) -> DeploymentState {
        lock(&self.state).clone()
    }

    /// Changes the state and writes it (with the status, and the environment's state when
    /// given) before anything acts on it.
    pub(crate) async fn persist(
        &self,
        new_status: Option<&str>,
        environment: Option<&EnvironmentState>,
        change: impl FnOnce(&mut DeploymentState),
    ) -> Result<(), StoreError> {
        let (state, status_now) = {
            let mut s = lock(&self.state);
            change(&mut s);
            let mut st = lock(&self.status);
            if let Some(n) = new_status {
                *st = n.to_string();
            }
            (s.clone(), st.clone())
        };
        let update = DeploymentUpdate {
            active: !status::is_final(&status_now),
            status: status_now,
            reason: state.reason.clone(),
            state: serde_json::to_value(&state).unwrap_or_default(),
        };
        self.store
            .update_deployment(self.id, &update, environment)
            .await?;
        Ok(())
    }

    /// Records an analysis in memory; the next write persists it.
    pub(crate) fn note_analysis(&self, service: &str, judgement: crate::analysis::Judgement) {
        lock(&self.state)
            .analysis
            .insert(service.to_string(), judgement);
    }

    /// Changes one service's progress and persists it.
    pub(crate) async fn progress(
        &self,
        service: &str,
        change: impl FnOnce(&mut ServiceProgress),
    ) -> Result<(), StoreError> {
        self.persist(None, None, |s| {
            if let Some(p) = s.services.get_mut(service) {
                change(p);
            }
        })
        .await
    }

    pub(crate) async fn event(
        &self,
        kind: &str,
        message: String,
        level: EventLevel,
        data: serde_json::Value,
    ) {
        let mut data = data;
        if let Some(obj) = data.as_object_mut() {
            obj.insert("deployment".into(), self.id.into());
            obj.insert("release".into(), self.new.release.id.clone().into());
        }
        let event = NewEvent::info(kind, message)
            .level(level)
            .environment(&self.environment)
            .subject(format!("deployment-{}", self.id))
            .data(data);
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }

    pub(crate) async fn info(&self, kind: &str, message: String, data: serde_json::Value) {
        self.event(kind, message, EventLevel::Info, data).await;
    }

    /// Fails when the deployment must stop moving forward (shutdown, abort, another service
    /// failed).
    pub(crate) fn check(&self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        if let Some(reason) = &self.controls.borrow().abort {
            return Err(Stop::Failed(reason.clone()));
        }
        if self.halt.is_cancelled() {
            return Err(Stop::Failed("another service failed".into()));
        }
        Ok(())
    }

    /// Sleeps, waking early to stop.
    pub(crate) async fn sleep(&self, d: Duration) -> Result<(), Stop> {
        let mut controls = self.controls.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
            _ = self.halt.cancelled() => {}
            _ = controls.changed() => {}
        }
        self.check()
    }

    /// Makes the set of `service` at `release` have `replicas` instances and waits until that
    /// many are ready, up to the deploy timeout. A cron service has no instances to wait for:
    /// its scheduler runs once the set exists.
    pub(crate) async fn bring_up(
        &self,
        side: &Loaded,
        service: &str,
        replicas: u32,
    ) -> Result<(), Stop> {
        self.check()?;
        self.platform
            .ensure_set(&side.snapshot.config, &side.release, service, replicas)
            .await
            .map_err(|e| Stop::Failed(format!("{service} {}: {e}", side.release.id)))?;
        if side
            .service(service)
            .is_some_and(|s| s.kind == slipway_spec::model::ServiceKind::Cron)
        {
            return Ok(());
        }
        self.wait_ready(side, service, replicas).await
    }

    /// Waits until `replicas` instances of a set are ready.
    pub(crate) async fn wait_ready(
        &self,
        side: &Loaded,
        service: &str,
        replicas: u32,
    ) -> Result<(), Stop> {
        let timeout = side.snapshot.config.deploy.timeout.std();
        let deadline = Instant::now() + timeout;
        loop {
            let sets = self.platform.sets(&self.environment).await;
            let set = sets
                .iter()
                .find(|s| s.service == service && s.release == side.release.id);
            if let Some(set) = set {
                if let Some(why) = &set.failed {
                    return Err(Stop::Failed(why.clone()));
                }
                if set.ready >= replicas {
                    return Ok(());
                }
                // Restarts piling up (or a policy that gave up) will not end in a ready set:
                // say so now, with what the instances said, rather than at the timeout.
                if matches!(set.state.as_str(), "crashlooping" | "failed") {
                    return Err(self.cannot_start(side, service, set).await);
                }
            }
            if Instant::now() >= deadline {
                let (ready, last) = set.map_or((0, None), |s| {
                    let last = s
                        .instances
                        .iter()
                        .filter(|i| i.health != "healthy")
                        .find_map(|i| i.checks.last().map(|c| c.detail.clone()));
                    (s.ready, last)
                });
                return Err(Stop::Failed(format!(
                    "{service} {}: {ready} of {replicas} instance(s) ready after {}{} (see `slipway logs {service}`; `[deploy] timeout` sets the limit)",
                    side.release.id,
                    side.snapshot.config.deploy.timeout,
                    last.map(|l| format!("; last check: {l}"))
                        .unwrap_or_default()
                )));
            }
            self.sleep(POLL).await?;
        }
    }

    /// Why a set will not become ready, with the last lines its instances wrote (kept in the
    /// service's progress for the CLI to show).
    async fn cannot_start(
        &self,
        side: &Loaded,
        service: &str,
        set: &slipway_runtime::supervisor::SetStatus,
    ) -> Stop {
        let output = self
            .platform
            .recent_output(&self.environment, service, &side.release.id, 10)
            .await;
        let last = output
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("; it printed: {}", l.trim()))
            .unwrap_or_default();
        let what = if set.state == "failed" {
            "gave up restarting"
        } else {
            "is crash-looping"
        };
        let why = format!(
            "{service} {} {what} ({}){last}",
            side.release.id,
            set.last_exit.as_deref().unwrap_or("no exit recorded"),
        );
        let _ = self.progress(service, |p| p.output = output).await;
        Stop::Failed(why)
    }

    /// Records and applies a traffic plan.
    pub(crate) async fn route(
        &self,
        service: &str,
        plan: Option<ServiceTraffic>,
    ) -> Result<(), Stop> {
        let weight = plan
            .as_ref()
            .map_or(0.0, |p| p.weight_of(&self.new.release.id));
        self.progress(service, |p| {
            p.traffic = plan.clone();
            p.weight = weight;
        })
        .await?;
        self.platform
            .set_traffic(&self.environment, service, plan)
            .await
            .map_err(|e| Stop::Failed(format!("the proxy did not take the new routes: {e}")))
    }

    /// Waits (up to the service's drain time) until the proxy has no request in flight to
    /// `release`'s instances `ids` (all of them when `None`), once they are out of its table.
    pub(crate) async fn drained(
        &self,
        service: &ResolvedService,
        release: &str,
        ids: Option<&[String]>,
    ) {
        let deadline = Instant::now() + service.drain.std();
        // A request that picked a backend just before the switch may not be counted yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
        loop {
            let Ok(samples) = self.platform.samples().await else {
                return;
            };
            let going: u64 = samples
                .iter()
                .filter(|p| {
                    p.environment == self.environment
                        && p.service == service.name
                        && p.release == release
                })
                .filter(|p| ids.is_some() || p.draining)
                .flat_map(|p| &p.backends_in_flight)
                .filter(|(id, _)| ids.is_none_or(|ids| ids.contains(id)))
                .map(|(_, n)| u64::from(*n))
                .sum();
            if going == 0 || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The cumulative counts of a release's pool on a track.
    pub(crate) async fn counts(
        &self,
        service: &str,
        release: &str,
        track: Track,
    ) -> Option<Counts> {
        let samples = self.platform.samples().await.ok()?;
        samples
            .into_iter()
            .find(|p| {
                p.environment == self.environment
                    && p.service == service
                    && p.release == release
                    && p.track == track
                    && !p.draining
            })
            .map(|p| p.counts)
    }

    /// Milliseconds since the deployment started (in this process).
    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Data for an event about a service.
pub(crate) fn about(service: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({ "service": service });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in more {
            obj.insert(k.clone(), x.clone());
        }
    }
    v
}
