//! One replica slot of a web or worker set: start or adopt an instance, check it, restart it
//! by its policy with backoff, and let it go (stopped, or left running) when cancelled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use slipway_spec::model::ServiceKind;
use slipway_spec::resolve::Probe;
use slipway_store::{EventLevel, NewEvent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ctx, InstanceStatus, KEEP_CHECKS, STABLE_AFTER, lock, ms_since, short_id};
use crate::driver::{Exit, Instance, InstanceSpec};
use crate::health::{self, CheckResult, Health, Tracker};

impl Ctx {
    /// Records an event of this service: its environment, and `service` in its data (so a
    /// reader needs not parse instance ids).
    pub(super) async fn event(&self, mut event: NewEvent) {
        if let Some(data) = event.data.as_object_mut() {
            data.entry("service")
                .or_insert_with(|| self.service.name.clone().into());
        }
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

    pub(super) async fn start(&self, slot: u32, id: String) -> Result<Instance, String> {
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
        let retiring = lock(&self.retiring).contains(&slot);
        let view = view.map(|mut v| {
            if retiring {
                v.state = "retiring".into();
            }
            v
        });
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

    pub(super) async fn stop_instance(&self, instance: &Instance) -> Exit {
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

    pub(super) async fn forget(&self, instance: &Instance) {
        let _ = self.driver.remove(instance).await;
        if let Some(p) = instance.port {
            self.ports.release(p);
        }
    }
}

pub(super) fn view(instance: &Instance, adopted: bool, health: Health) -> InstanceStatus {
    InstanceStatus {
        id: instance.id.clone(),
        pid: Some(instance.process.pid),
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
    /// Readiness is checked often until its first success, so a new instance gets traffic
    /// (and a deploy moves on) as soon as it can serve, not an interval later.
    eager: bool,
}

/// How often readiness is checked until its first success (at most).
const EAGER_INTERVAL: Duration = Duration::from_millis(50);

impl<'a> ProbeState<'a> {
    fn new(probe: &'a Probe, eager: bool) -> Self {
        ProbeState {
            probe,
            tracker: Tracker::new(probe),
            next: Instant::now(),
            eager,
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
        let counts = target.uptime >= self.probe.start_period.std();
        let changed = self.tracker.record(result.ok, counts);
        if result.ok {
            self.eager = false;
        }
        let interval = self.probe.interval.std();
        self.next = Instant::now()
            + if self.eager {
                interval.min(EAGER_INTERVAL)
            } else {
                interval
            };
        (result, changed)
    }
}

/// Watches one instance until it ends, fails liveness, or the task is cancelled.
async fn watch(ctx: &Ctx, instance: &Instance, cancel: &CancellationToken) -> Ended {
    let started = Instant::now()
        - Duration::from_millis(u64::try_from(ms_since(instance.started_at)).unwrap_or(0));
    let mut readiness = ctx
        .service
        .readiness
        .as_ref()
        .map(|p| ProbeState::new(p, true));
    let mut liveness = ctx
        .service
        .liveness
        .as_ref()
        .map(|p| ProbeState::new(p, false));
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
pub(super) async fn run_slot(
    ctx: Arc<Ctx>,
    slot: u32,
    adopted: Option<Instance>,
    cancel: CancellationToken,
) {
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
                let id = format!(
                    "{}-{}-{slot}-{}",
                    ctx.service.name,
                    ctx.release.id,
                    short_id()
                );
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
        // The slot stays listed while it waits to start the next instance.
        ctx.set_instance(slot, Some(restarting(&instance, &reason)));
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
            ctx.set_instance(slot, None);
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                ctx.set_instance(slot, None);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The view of a slot between an instance's end and its replacement's start.
fn restarting(ended: &Instance, reason: &str) -> InstanceStatus {
    InstanceStatus {
        pid: None,
        state: "restarting".into(),
        health: "none".into(),
        port: None,
        checks: vec![CheckResult {
            at: jiff::Timestamp::now(),
            ok: false,
            detail: reason.to_string(),
            ms: 0,
        }],
        ..view(ended, false, Health::None)
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
