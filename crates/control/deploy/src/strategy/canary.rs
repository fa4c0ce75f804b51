//! `canary`: traffic moves to the new release in weighted steps (default 5 %, 25 %, 50 %,
//! 100 %). The new release's set grows with its share; the stable set stays whole, so a
//! rollback is only a route change. Each step bakes for its time while the analysis compares
//! the canary with the stable release over the same interval ([`crate::analysis`]); too few
//! requests extend the step, and a step extended for long pauses for a person. Pause steps
//! wait for `slipway promote`; `slipway pause` stops the clock; `promote --full` skips the
//! remaining steps.

use std::time::Duration;

use serde_json::json;
use slipway_proxy::Track;
use slipway_proxy::metrics::Counts;
use slipway_spec::model::IdlePolicy;
use slipway_spec::resolve::{ResolvedService, ResolvedStep, StepPause};
use slipway_store::EventLevel;
use tokio::time::Instant;

use super::split;
use crate::analysis::{self, Verdict};
use crate::record::status;
use crate::run::{Loaded, Run, Stop, about};

pub(super) async fn run(
    run: &Run,
    spec: &ResolvedService,
    old: &Loaded,
    old_spec: &ResolvedService,
) -> Result<(), Stop> {
    let name = spec.name.as_str();
    let replicas = spec.replicas.max(1);
    let steps = &spec.strategy.steps;
    let first = run.state().services.get(name).map_or(0, |p| p.step);
    if first == 0 && run.state().smoke.is_some() {
        let n = steps.first().map_or(replicas, |s| {
            ((f64::from(replicas) * s.weight / 100.0).ceil() as u32).clamp(1, replicas)
        });
        run.progress(name, |p| p.new_replicas = p.new_replicas.max(n))
            .await?;
        run.bring_up(&run.new, name, n).await?;
        super::preview_smoke(run, spec, Some(old)).await?;
    }
    for (i, step) in steps.iter().enumerate().skip(first) {
        run.check()?;
        if step.weight >= 100.0 || run.state().skip_steps {
            break;
        }
        let n = ((f64::from(replicas) * step.weight / 100.0).ceil() as u32).clamp(1, replicas);
        run.progress(name, |p| {
            p.step = i;
            p.new_replicas = p.new_replicas.max(n);
            p.detail = format!("step {}/{}: {}%", i + 1, steps.len(), step.weight);
        })
        .await?;
        // The stable release's counts from before the step's instances start: the decisive
        // check compares the canary with everything the stable release answered since, which
        // is still the same moments (a start takes seconds), but enough requests for a tight
        // bound from the step's first instant, when a bad release meets its first users.
        let before = read(run, name, old).await.map(|(_, s)| s);
        run.bring_up(&run.new, name, n).await?;
        run.route(
            name,
            Some(split(
                &old.release.id,
                &run.new.release.id,
                step.weight,
                spec,
                true,
            )),
        )
        .await?;
        run.info(
            "deploy.step",
            format!(
                "{name}: step {}/{}, {}% of traffic on {}",
                i + 1,
                steps.len(),
                step.weight,
                run.new.release.id
            ),
            about(name, json!({ "step": i, "weight": step.weight })),
        )
        .await;
        bake(run, spec, old, i, step, before).await?;
    }
    run.progress(name, |p| {
        p.new_replicas = replicas;
        p.detail = format!("promoting {} to all traffic", run.new.release.id);
    })
    .await?;
    run.bring_up(&run.new, name, replicas).await?;
    super::switch_all(run, spec, old, old_spec, "deploy.promoted").await
}

/// Reads the canary's and the stable release's counts.
async fn read(run: &Run, name: &str, old: &Loaded) -> Option<(Counts, Counts)> {
    let samples = run.platform.samples().await.ok()?;
    let find = |release: &str, track: Track| {
        samples
            .iter()
            .find(|p| {
                p.environment == run.environment
                    && p.service == name
                    && p.release == release
                    && p.track == track
                    && !p.draining
            })
            .map(|p| p.counts.clone())
    };
    let canary = find(&run.new.release.id, Track::Canary).unwrap_or_default();
    let stable = find(&old.release.id, Track::Stable)?;
    Some((canary, stable))
}

/// Bakes one step: analysis every interval, until the bake time is over with a passing
/// analysis (and, for a pause step, a promotion).
async fn bake(
    run: &Run,
    spec: &ResolvedService,
    old: &Loaded,
    index: usize,
    step: &ResolvedStep,
    before: Option<Counts>,
) -> Result<(), Stop> {
    let name = spec.name.as_str();
    let a = &spec.strategy.analysis;
    let interval = a.interval.std().max(Duration::from_millis(20));
    // Looking often costs one loopback request; looking late costs users errors, most of all
    // in the first moments of a step, when a new share of users first meets the release.
    let poll = |since_start: Duration| {
        if since_start < Duration::from_secs(1) {
            interval.min(Duration::from_millis(5))
        } else {
            interval.min(Duration::from_millis(20))
        }
    };
    let extra = match step.pause {
        StepPause::For(d) => d.std(),
        _ => Duration::ZERO,
    };
    let bake_for = step.bake.std() + extra;
    let give_up = bake_for + (bake_for * 10).max(Duration::from_secs(60));
    let mut start = Instant::now();
    let (mut step_c, mut step_s) = read(run, name, old).await.unwrap_or_default();
    let (mut last_c, mut last_s) = (step_c.clone(), step_s.clone());
    let mut last_at = Instant::now();
    let mut failures = 0u32;
    let mut passes = 0u32;
    let mut extended = false;
    let mut promotions = run.controls.borrow().promotions;
    loop {
        run.sleep(poll(start.elapsed())).await?;
        let controls = run.controls.borrow().clone();
        if controls.full {
            run.persist(None, None, |s| s.skip_steps = true).await?;
            return Ok(());
        }
        if controls.promotions > promotions {
            return Ok(());
        }
        if controls.paused {
            let paused_at = Instant::now();
            wait_for_person(run, "paused by `slipway pause`", false).await?;
            start += paused_at.elapsed();
            promotions = run.controls.borrow().promotions;
            continue;
        }
        let Some((c, s)) = read(run, name, old).await else {
            continue;
        };
        // Counts that went back belong to a pool the proxy created anew: start over.
        let (Some(in_step_c), Some(in_step_s)) = (c.since(&step_c), s.since(&step_s)) else {
            (step_c, step_s, last_c, last_s) = (c.clone(), s.clone(), c, s);
            continue;
        };
        let recent_s = before.as_ref().and_then(|b| s.since(b));
        let baseline = recent_s.as_ref().unwrap_or(&in_step_s);
        if let Some(reason) = analysis::decisive(&in_step_c, Some(baseline), a) {
            // Kept in memory only: the rollback writes the state first thing, and every
            // millisecond before traffic moves back is more users seeing the errors.
            let j = analysis::judge(&in_step_c, Some(&in_step_s), a);
            run.note_analysis(name, j);
            return Err(Stop::Failed(format!("{name}: {reason}")));
        }
        if last_at.elapsed() >= interval {
            let (Some(dc), Some(ds)) = (c.since(&last_c), s.since(&last_s)) else {
                (last_c, last_s) = (c, s);
                continue;
            };
            let j = analysis::judge(&dc, Some(&ds), a);
            match j.verdict {
                // Too few requests: the interval goes on until it has enough.
                Verdict::Inconclusive => {}
                Verdict::Fail => {
                    failures += 1;
                    (last_c, last_s, last_at) = (c, s, Instant::now());
                }
                Verdict::Pass => {
                    failures = 0;
                    passes += 1;
                    (last_c, last_s, last_at) = (c, s, Instant::now());
                }
            }
            let verdict = j.verdict;
            let reason = j.reason.clone();
            run.persist(None, None, |st| {
                st.analysis.insert(name.to_string(), j);
            })
            .await?;
            if verdict == Verdict::Fail {
                run.event(
                    "deploy.analysis",
                    format!(
                        "{name}: analysis failed ({failures} of {}): {reason}",
                        a.failure_limit
                    ),
                    EventLevel::Warning,
                    about(name, json!({ "step": index, "failures": failures })),
                )
                .await;
            }
            if failures >= a.failure_limit.max(1) {
                return Err(Stop::Failed(format!(
                    "{name}: analysis failed {failures} time(s) in a row: {reason}"
                )));
            }
        }
        let elapsed = start.elapsed();
        if elapsed < bake_for {
            continue;
        }
        // Not one request to either release: nothing to compare, nobody to protect.
        let idle = passes == 0
            && in_step_c.requests() == 0
            && in_step_s.requests() == 0
            && a.idle == IdlePolicy::Continue;
        if idle {
            run.info(
                "deploy.idle",
                format!(
                    "{name}: step {} ({}%) got no traffic at all in {}s; going on without analysis (`analysis.idle = \"wait\"` waits for traffic instead)",
                    index + 1,
                    step.weight,
                    elapsed.as_secs()
                ),
                about(name, json!({ "step": index })),
            )
            .await;
        }
        if passes > 0 || idle {
            if step.pause == StepPause::UntilPromoted {
                wait_for_person(
                    run,
                    &format!(
                        "{name}: step {} ({}%) waits for `slipway promote`",
                        index + 1,
                        step.weight
                    ),
                    true,
                )
                .await?;
            }
            return Ok(());
        }
        if !extended {
            extended = true;
            let requests = in_step_c.requests();
            let why = format!(
                "step {} ({}%) extended: analysis inconclusive, only {requests} request(s) reached {} ({} needed per interval); it waits up to {}s for traffic, `slipway promote` goes on without it",
                index + 1,
                step.weight,
                run.new.release.id,
                a.min_requests,
                give_up.as_secs()
            );
            run.progress(name, |p| p.detail = why.clone()).await?;
            run.info(
                "deploy.extended",
                format!("{name}: {why}"),
                about(name, json!({ "step": index, "requests": requests })),
            )
            .await;
        }
        if elapsed >= give_up {
            wait_for_person(
                run,
                &format!(
                    "{name}: analysis still inconclusive after {}s at {}%; `slipway promote` goes on, `slipway abort` rolls back",
                    elapsed.as_secs(),
                    step.weight
                ),
                true,
            )
            .await?;
            return Ok(());
        }
    }
}

/// Pauses the deployment until `slipway promote` (or, when `promotion_needed` is false,
/// `slipway resume` as well).
async fn wait_for_person(run: &Run, why: &str, promotion_needed: bool) -> Result<(), Stop> {
    let seen = run.controls.borrow().promotions;
    run.persist(Some(status::PAUSED), None, |s| {
        s.paused = Some(why.to_string());
        s.needs_promotion = promotion_needed;
    })
    .await?;
    run.info("deploy.paused", why.to_string(), json!({})).await;
    loop {
        run.sleep(Duration::from_millis(100)).await?;
        let c = run.controls.borrow().clone();
        let promoted = c.promotions > seen || c.full;
        if promoted || (!promotion_needed && !c.paused) {
            break;
        }
    }
    run.persist(Some(status::RUNNING), None, |s| {
        s.paused = None;
        s.needs_promotion = false;
    })
    .await?;
    run.info("deploy.resumed", "the deployment goes on".into(), json!({}))
        .await;
    Ok(())
}
