//! How deployments end: the commit (the environment's current release becomes the new one, in
//! the same write as the deployment's state), the post-deploy watch, the finishing step (old
//! sets removed, or kept warm as a blue-green standby), and the way back — a revert before the
//! commit, or after it when the watch catches a breach. Also the first release of an
//! environment and `slipway rollback`.

use std::time::Duration;

use serde_json::json;
use slipway_proxy::Track;
use slipway_spec::model::{ServiceKind, StrategyKind};
use slipway_store::{EnvironmentState, EventLevel};
use tokio::time::Instant;

use crate::analysis::{self, Verdict};
use crate::platform::ServiceTraffic;
use crate::record::{BaselineStats, EnvironmentData, Standby, status};
use crate::run::{Loaded, Run, Stop, about, now_ms};
use crate::strategy::routed;

/// The environment's state with `current` running and `previous` before it.
async fn moved(
    run: &Run,
    current: &Loaded,
    previous: Option<&Loaded>,
    standby: Option<Standby>,
) -> Result<EnvironmentState, Stop> {
    let before = run.store.environment_state(&run.environment).await?;
    let mut data = EnvironmentData::from_value(&before.data);
    data.overrides = current.snapshot.overrides.clone();
    data.standby = standby;
    Ok(EnvironmentState {
        current_release: Some(current.number),
        previous_release: previous.map(|p| p.number),
        data: data.to_value(),
    })
}

/// Makes the new release the environment's current one.
pub(crate) async fn commit(run: &Run) -> Result<(), Stop> {
    let state = moved(run, &run.new, run.old.as_ref(), None).await?;
    let now = now_ms();
    run.persist(None, Some(&state), |s| {
        s.committed = true;
        s.switched_ms.get_or_insert(now);
    })
    .await?;
    run.info(
        "deploy.committed",
        format!(
            "{} is now the current release of {}",
            run.new.release.id, run.environment
        ),
        json!({}),
    )
    .await;
    Ok(())
}

/// Records every one of `services` as moving to its full count of the new release's instances.
async fn all_moving(
    run: &Run,
    services: &[slipway_spec::resolve::ResolvedService],
) -> Result<(), Stop> {
    run.persist(None, None, |s| {
        for spec in services {
            if let Some(p) = s.services.get_mut(&spec.name) {
                p.phase = "moving".into();
                p.new_replicas = spec.replicas;
            }
        }
    })
    .await?;
    Ok(())
}

/// The first release of an environment: everything starts at once, traffic goes to each web
/// service once it is ready (or once the deploy timeout is over, so its 503s come from the
/// proxy), and the deployment ends when every instance is ready — failed, with everything left
/// running to look at, when some are not ready in time: there is nothing to go back to.
pub(crate) async fn first_release(run: &Run) -> Result<(), Stop> {
    let services: Vec<_> = run.new.snapshot.config.services.values().cloned().collect();
    let mut problems = Vec::new();
    all_moving(run, &services).await?;
    for spec in &services {
        if let Err(e) = run
            .platform
            .ensure_set(
                &run.new.snapshot.config,
                &run.new.release,
                &spec.name,
                spec.replicas,
            )
            .await
        {
            problems.push(e.to_string());
        }
    }
    // What runs is this release, ready or not: there is no other.
    if !run.state().committed {
        commit(run).await?;
    }
    for spec in &services {
        let mut ready = true;
        if spec.kind != ServiceKind::Cron
            && let Err(Stop::Failed(why)) =
                run.wait_ready(&run.new, &spec.name, spec.replicas).await
        {
            problems.push(why);
            ready = false;
        }
        if routed(spec) {
            run.route(
                &spec.name,
                Some(ServiceTraffic::stable(&run.new.release.id, spec)),
            )
            .await?;
        }
        run.progress(&spec.name, |p| {
            p.phase = "done".into();
            p.new_replicas = spec.replicas;
            p.detail = if ready {
                format!("all on {}", run.new.release.id)
            } else {
                format!("{} is not ready", run.new.release.id)
            };
        })
        .await?;
    }
    if !problems.is_empty() {
        problems.dedup();
        return end(run, status::FAILED, Some(problems.join("; "))).await;
    }
    // Watched like any release, against its absolute limits (there is no earlier release to
    // compare with, nor to go back to: a breach fails it and it keeps running).
    if let Some(breach) = watch(run).await? {
        return end(
            run,
            status::FAILED,
            Some(format!(
                "{breach} (the environment's first release: nothing to go back to, it keeps running)"
            )),
        )
        .await;
    }
    end(run, status::SUCCEEDED, None).await
}

/// Ends the deployment with a final status.
pub(crate) async fn end(run: &Run, final_status: &str, reason: Option<String>) -> Result<(), Stop> {
    let took = run.elapsed_ms();
    run.persist(Some(final_status), None, |s| {
        if reason.is_some() {
            s.reason.clone_from(&reason);
        }
        s.paused = None;
    })
    .await?;
    let (kind, level) = match final_status {
        status::SUCCEEDED => ("deploy.succeeded", EventLevel::Info),
        status::ROLLED_BACK => ("deploy.rolled_back", EventLevel::Warning),
        _ => ("deploy.failed", EventLevel::Error),
    };
    let what = if run.kind == crate::record::KIND_ROLLBACK {
        format!("rollback to {}", run.new.release.id)
    } else {
        format!("deployment of {}", run.new.release.id)
    };
    let message = match &reason {
        Some(r) => format!("{what} {final_status} in {took}ms: {r}"),
        None => format!("{what} {final_status} in {took}ms"),
    };
    // The calls that started it (or rolled it back) get its outcome in the audit log.
    if let Err(e) = run
        .store
        .complete_audit(&format!("deployment-{}", run.id), final_status)
        .await
    {
        tracing::warn!(deployment = run.id, error = %e, "cannot complete the audit record");
    }
    run.event(
        kind,
        message,
        level,
        json!({ "duration_ms": took, "reason": reason }),
    )
    .await;
    Ok(())
}

/// After the commit: the watch (if any service has one), then the finishing step.
pub(crate) async fn after_commit(run: &Run) -> Result<(), Stop> {
    if let Some(reason) = watch(run).await? {
        return revert_committed(run, &reason).await;
    }
    finish(run).await
}

/// Watches the new release against the stats of the old one before the deploy. Returns the
/// breach that calls for a rollback, if any.
async fn watch(run: &Run) -> Result<Option<String>, Stop> {
    let forced = run.state().watch;
    let watch_of = |s: &slipway_spec::resolve::ResolvedService| {
        forced.unwrap_or(s.strategy.analysis.watch.std())
    };
    let services: Vec<_> = run
        .new
        .snapshot
        .config
        .services
        .values()
        .filter(|s| routed(s) && !watch_of(s).is_zero())
        .cloned()
        .collect();
    let longest = services.iter().map(watch_of).max().unwrap_or_default();
    if longest.is_zero() {
        return Ok(None);
    }
    let until = run
        .state()
        .watch_until_ms
        .unwrap_or(now_ms() + i64::try_from(longest.as_millis()).unwrap_or(i64::MAX));
    run.persist(Some(status::WATCHING), None, |s| {
        s.watch_until_ms = Some(until)
    })
    .await?;
    run.info(
        "deploy.watching",
        format!(
            "watching {} for {}s against the stats before the deploy",
            run.new.release.id,
            longest.as_secs()
        ),
        json!({ "until_ms": until }),
    )
    .await;
    let baseline = run.state().baseline;
    let mut last: Vec<Option<slipway_proxy::metrics::Counts>> = Vec::new();
    for s in &services {
        last.push(
            run.counts(&s.name, &run.new.release.id, Track::Stable)
                .await,
        );
    }
    let mut failures = vec![0u32; services.len()];
    let mut last_at = vec![Instant::now(); services.len()];
    while now_ms() < until {
        run.sleep(Duration::from_millis(100)).await?;
        for (i, s) in services.iter().enumerate() {
            let a = &s.strategy.analysis;
            if last_at[i].elapsed() < a.interval.std() {
                continue;
            }
            let Some(now) = run
                .counts(&s.name, &run.new.release.id, Track::Stable)
                .await
            else {
                continue;
            };
            let Some(delta) = last[i].as_ref().and_then(|l| now.since(l)) else {
                last[i] = Some(now);
                continue;
            };
            let before = baseline.get(&s.name).cloned().unwrap_or_default();
            let j = analysis::watch(&delta, &before, a);
            if j.verdict == Verdict::Inconclusive {
                continue;
            }
            last[i] = Some(now);
            last_at[i] = Instant::now();
            failures[i] = if j.verdict == Verdict::Fail {
                failures[i] + 1
            } else {
                0
            };
            let reason = j.reason.clone();
            run.persist(None, None, |st| {
                st.analysis.insert(s.name.clone(), j);
            })
            .await?;
            if failures[i] >= a.failure_limit.max(1) {
                return Ok(Some(format!(
                    "{}: the post-deploy watch failed: {reason}",
                    s.name
                )));
            }
        }
    }
    Ok(None)
}

/// Removes what is left of the old release (blue-green services keep theirs warm as a
/// standby), prunes old releases, and ends the deployment as succeeded.
pub(crate) async fn finish(run: &Run) -> Result<(), Stop> {
    let mut standby_for: Option<Duration> = None;
    if let Some(old) = &run.old {
        for (name, spec) in &old.snapshot.config.services {
            let strategy = run.state().services.get(name).map(|p| p.strategy);
            let keeps = strategy == Some(StrategyKind::BlueGreen)
                && run.new.service(name).is_some_and(routed);
            if keeps && run.kind != crate::record::KIND_ROLLBACK {
                let d = run
                    .new
                    .service(name)
                    .map_or(spec.strategy.standby, |s| s.strategy.standby);
                standby_for = Some(standby_for.unwrap_or_default().max(d.std()));
                continue;
            }
            run.platform
                .remove_set(&run.environment, name, &old.release.id)
                .await;
        }
        if let Some(d) = standby_for.filter(|d| !d.is_zero()) {
            let standby = Standby {
                release: old.number,
                until_ms: now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            };
            let state = moved(run, &run.new, Some(old), Some(standby.clone())).await?;
            run.store
                .set_environment_state(&run.environment, &state)
                .await?;
            run.info(
                "deploy.standby",
                format!(
                    "{} stays warm for {}s for an instant rollback",
                    old.release.id,
                    d.as_secs()
                ),
                json!({ "standby": old.release.id, "until_ms": standby.until_ms }),
            )
            .await;
        } else if standby_for.is_some() {
            for name in old.snapshot.config.services.keys() {
                run.platform
                    .remove_set(&run.environment, name, &old.release.id)
                    .await;
            }
        }
    }
    end(run, status::SUCCEEDED, None).await
}

/// Goes back to the old release before the commit: its sets are brought back to full, every
/// routed service's traffic goes back to it, and the new release's sets are removed.
pub(crate) async fn revert(run: &Run, reason: &str) -> Result<(), Stop> {
    let Some(old) = run.old.clone() else {
        return end(run, status::FAILED, Some(reason.to_string())).await;
    };
    // Nothing moved yet (a failed release command, say): the deploy failed and changed
    // nothing, rather than rolled back.
    let changed = run.state().services.values().any(|p| p.phase != "waiting")
        || run.state().release_command_done;
    let decided = run.controls.borrow().abort_at_ms.unwrap_or_else(now_ms);
    // Timed only when this is the whole way back (a rolling deploy's old set has to grow
    // first, which `go_back` does).
    let reverted_in_ms = quick_switch(run, &old)
        .await
        .then(|| u64::try_from(now_ms() - decided).unwrap_or(0));
    rolling_back(run, &old, reason, reverted_in_ms).await?;
    go_back(run, &old).await?;
    if changed {
        end(run, status::ROLLED_BACK, Some(reason.to_string())).await
    } else {
        end(run, status::FAILED, Some(reason.to_string())).await
    }
}

/// Records (and announces) that the deployment goes back to `old`, and why.
async fn rolling_back(
    run: &Run,
    old: &Loaded,
    reason: &str,
    reverted_in_ms: Option<u64>,
) -> Result<(), Stop> {
    run.persist(Some(status::ROLLING_BACK), None, |s| {
        s.reason = Some(reason.to_string());
        s.paused = None;
        s.reverted_in_ms = reverted_in_ms;
    })
    .await?;
    // A person's abort is in the audit log already; a rollback the control plane decided on
    // (a failed analysis, a watch breach, a restart mid-deploy) is its own act.
    if run.controls.borrow().abort.is_none() {
        let entry = slipway_store::NewAudit {
            actor: "system".into(),
            action: "deploy.rollback".into(),
            environment: Some(run.environment.clone()),
            target: format!(
                "deployment {} (deploy of {}, back to {})",
                run.id, run.new.release.id, old.release.id
            ),
            reason: Some(reason.to_string()),
            subject: Some(format!("deployment-{}", run.id)),
            outcome: "started".into(),
            details: json!({ "automatic": true }),
            ..Default::default()
        };
        if let Err(e) = run.store.append_audit(entry).await {
            tracing::warn!(deployment = run.id, error = %e, "cannot audit the rollback");
        }
    }
    run.event(
        "deploy.rolling_back",
        format!("rolling back to {}: {reason}", old.release.id),
        EventLevel::Warning,
        json!({ "reason": reason, "to": old.release.id }),
    )
    .await;
    Ok(())
}

/// Before anything else, puts every routed service whose old set is whole and ready back on
/// it. Unlike every other step this acts before it is written down: it moves traffic to the
/// release the environment is committed to, which is what recovery would do anyway, and each
/// millisecond earlier is fewer users seeing a bad release's errors. Whether every routed
/// service is back.
async fn quick_switch(run: &Run, old: &Loaded) -> bool {
    let sets = run.platform.sets(&run.environment).await;
    let mut all = true;
    for (name, spec) in &old.snapshot.config.services {
        if !routed(spec) {
            continue;
        }
        let whole = sets
            .iter()
            .find(|s| &s.service == name && s.release == old.release.id)
            .is_some_and(|s| s.ready >= spec.replicas);
        if !whole {
            all = false;
            continue;
        }
        let plan = ServiceTraffic::stable(&old.release.id, spec);
        if let Err(e) = run
            .platform
            .set_traffic(&run.environment, name, Some(plan))
            .await
        {
            tracing::warn!(service = %name, error = %e, "cannot move traffic back yet");
            all = false;
        }
    }
    all
}

/// Brings every service back to `old`, then removes the new release's sets.
async fn go_back(run: &Run, old: &Loaded) -> Result<(), Stop> {
    let names: Vec<String> = run
        .new
        .snapshot
        .config
        .services
        .keys()
        .chain(old.snapshot.config.services.keys())
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(n) {
                v.push(n.clone());
            }
            v
        });
    let results =
        futures_util::future::join_all(names.iter().map(|name| service_back(run, old, name))).await;
    for r in results {
        if let Err(Stop::Shutdown) = r {
            return Err(Stop::Shutdown);
        }
    }
    Ok(())
}

async fn service_back(run: &Run, old: &Loaded, name: &str) -> Result<(), Stop> {
    if run.shutdown.is_cancelled() {
        return Err(Stop::Shutdown);
    }
    if let Some(spec) = old.service(name) {
        if let Err(e) = run
            .platform
            .ensure_set(&old.snapshot.config, &old.release, name, spec.replicas)
            .await
        {
            run.event(
                "deploy.rollback_problem",
                format!("{name}: {} could not be brought back: {e}", old.release.id),
                EventLevel::Error,
                about(name, json!({})),
            )
            .await;
        }
        if spec.kind != ServiceKind::Cron {
            // Best effort: traffic goes back even if not every old instance is ready again,
            // because the new release is the one known to be bad.
            let deadline = Instant::now() + old.snapshot.config.deploy.timeout.std();
            loop {
                let sets = run.platform.sets(&run.environment).await;
                // Ready, or certain never to be (it cannot start, or crash-loops).
                let ready = sets
                    .iter()
                    .find(|s| s.service == name && s.release == old.release.id)
                    .is_some_and(|s| {
                        s.ready >= spec.replicas
                            || s.failed.is_some()
                            || matches!(s.state.as_str(), "crashlooping" | "failed")
                    });
                if ready || Instant::now() >= deadline || run.shutdown.is_cancelled() {
                    break;
                }
                tokio::time::sleep(crate::run::POLL).await;
            }
        }
        let plan = routed(spec).then(|| ServiceTraffic::stable(&old.release.id, spec));
        run.progress(name, |p| {
            p.traffic.clone_from(&plan);
            p.weight = 0.0;
            p.phase = "reverted".into();
            p.detail = format!("back on {}", old.release.id);
        })
        .await?;
        if let Some(plan) = plan {
            run.platform
                .set_traffic(&run.environment, name, Some(plan))
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?;
        }
    } else if run.new.service(name).is_some_and(routed) {
        run.platform
            .set_traffic(&run.environment, name, None)
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
    }
    if let Some(spec) = run.new.service(name) {
        if routed(spec) {
            run.drained(spec, &run.new.release.id, None).await;
        }
        run.platform
            .remove_set(&run.environment, name, &run.new.release.id)
            .await;
    }
    Ok(())
}

/// Goes back after the commit (the watch caught a breach): the old release becomes current
/// again in the same write as the deployment's state.
pub(crate) async fn revert_committed(run: &Run, reason: &str) -> Result<(), Stop> {
    let Some(old) = run.old.clone() else {
        return end(run, status::FAILED, Some(reason.to_string())).await;
    };
    rolling_back(run, &old, reason, None).await?;
    go_back(run, &old).await?;
    let state = moved(run, &old, Some(&run.new), None).await?;
    run.persist(None, Some(&state), |s| s.committed = false)
        .await?;
    end(run, status::ROLLED_BACK, Some(reason.to_string())).await
}

/// `slipway rollback`: every routed service's set of the target release comes up (already
/// there when it is the warm standby) and takes all traffic as soon as it is ready, all
/// services at once; then workers and cron move; then the release it replaces goes.
pub(crate) async fn rollback(run: &Run) -> Result<(), Stop> {
    let target = &run.new;
    let services: Vec<_> = target.snapshot.config.services.values().cloned().collect();
    all_moving(run, &services).await?;
    let switch = |spec: slipway_spec::resolve::ResolvedService| async move {
        run.platform
            .ensure_set(
                &target.snapshot.config,
                &target.release,
                &spec.name,
                spec.replicas,
            )
            .await
            .map_err(|e| Stop::Failed(format!("{}: {e}", spec.name)))?;
        if spec.kind != ServiceKind::Cron {
            run.wait_ready(target, &spec.name, spec.replicas).await?;
        }
        if routed(&spec) {
            run.route(
                &spec.name,
                Some(ServiceTraffic::stable(&target.release.id, &spec)),
            )
            .await?;
        }
        run.progress(&spec.name, |p| {
            p.phase = "done".into();
            p.weight = 100.0;
            p.detail = format!("all on {}", target.release.id);
        })
        .await
        .map_err(Stop::from)
    };
    let (front, back): (Vec<_>, Vec<_>) = services.iter().cloned().partition(routed);
    for group in [front, back] {
        let results = futures_util::future::join_all(group.into_iter().map(switch)).await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        if run.state().switched_ms.is_none() {
            let now = now_ms();
            run.persist(None, None, |s| s.switched_ms = Some(now))
                .await?;
        }
    }
    if let Some(current) = &run.old {
        for name in current.snapshot.config.services.keys() {
            if !target.snapshot.config.services.contains_key(name) {
                run.platform
                    .set_traffic(&run.environment, name, None)
                    .await
                    .ok();
            }
        }
    }
    commit(run).await?;
    if let Some(current) = &run.old {
        for (name, spec) in &current.snapshot.config.services {
            if routed(spec) {
                run.drained(spec, &current.release.id, None).await;
            }
            run.platform
                .remove_set(&run.environment, name, &current.release.id)
                .await;
        }
    }
    let reason = run.state().reason;
    end(run, status::SUCCEEDED, reason).await
}

/// What the stable release of each routed service did over the last minute, for the watch.
pub(crate) async fn baseline(run: &Run) -> indexmap::IndexMap<String, BaselineStats> {
    let mut out = indexmap::IndexMap::new();
    let Some(old) = &run.old else {
        return out;
    };
    let Ok(stats) = run.platform.window_stats(Duration::from_secs(60)).await else {
        return out;
    };
    for (key, s) in stats {
        if key.environment == run.environment
            && key.release == old.release.id
            && key.track == Track::Stable
        {
            out.insert(
                key.service.clone(),
                BaselineStats {
                    requests: s.requests,
                    error_rate: s.error_rate,
                    p95_ms: s.p95_ms,
                },
            );
        }
    }
    out
}
