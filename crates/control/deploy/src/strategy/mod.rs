//! How one service moves from the old release to the new one. Each strategy brings the new
//! release's set up, moves the service's traffic (web services with a public port) and takes
//! the old set down as far as it goes before the deployment commits; what is left of the old
//! set (a warm standby, a set kept for the post-deploy watch) is the finishing step's.
//!
//! | strategy | web service | worker |
//! |---|---|---|
//! | `recreate` | old stopped, then new started (brief downtime) | the same: never both at once |
//! | `rolling` | `max_surge` new up, then old drained and stopped, repeated; traffic by instance count | new up, `overlap`, old stopped, one batch at a time |
//! | `blue-green` | a full new set on the preview route, smoke-checked, then all traffic at once | — |
//! | `canary` | weight steps with bake times and analysis against the stable baseline | — |
//!
//! A cron service's scheduler moves to the new release (runs already going finish).

mod blue_green;
mod canary;
mod recreate;
mod rolling;

use slipway_proxy::Track;
use slipway_spec::model::{ServiceKind, StrategyKind};
use slipway_spec::resolve::ResolvedService;

use crate::platform::{PlannedPool, ServiceTraffic};
use crate::run::{Run, Stop};

/// The strategy a service moves with: its own, or the one a deploy forces where it fits.
pub(crate) fn effective(service: &ResolvedService, forced: Option<StrategyKind>) -> StrategyKind {
    let routed = routed(service);
    let wanted = match (service.kind, forced) {
        (ServiceKind::Web, Some(k)) => k,
        _ => service.strategy.kind,
    };
    match (service.kind, wanted) {
        (ServiceKind::Cron, _) => StrategyKind::Recreate,
        (_, StrategyKind::Canary | StrategyKind::BlueGreen) if !routed => StrategyKind::Rolling,
        (_, k) => k,
    }
}

/// How a service moves to a new release, for people (`slipway plan`).
pub fn how_it_moves(service: &ResolvedService) -> String {
    let s = &service.strategy;
    match (service.kind, effective(service, None)) {
        (ServiceKind::Cron, _) => {
            "its schedule moves to the new release (runs going finish)".into()
        }
        (_, StrategyKind::Recreate) => "recreate: old instances stop, then new ones start".into(),
        (ServiceKind::Worker, _) => format!(
            "rolling: new instances up, then the old ones stopped{}",
            if s.overlap.std().is_zero() {
                String::new()
            } else {
                format!(" after {} side by side", s.overlap)
            }
        ),
        (_, StrategyKind::Rolling) => format!(
            "rolling: {} new instance(s) at a time, each ready before an old one is drained",
            s.max_surge.max(1)
        ),
        (_, StrategyKind::BlueGreen) => format!(
            "blue-green: a full new set checked on the preview route, then all traffic at once; the old set stays warm {}",
            s.standby
        ),
        (_, StrategyKind::Canary) => {
            let steps: Vec<String> = s
                .steps
                .iter()
                .map(|st| match st.pause {
                    slipway_spec::resolve::StepPause::UntilPromoted => {
                        format!("{}% (waits for `slipway promote`)", st.weight)
                    }
                    _ => format!("{}%", st.weight),
                })
                .collect();
            let bake = s
                .steps
                .first()
                .map(|st| st.bake.to_string())
                .unwrap_or_default();
            let idle = match s.analysis.idle {
                slipway_spec::model::IdlePolicy::Continue => "steps without traffic go on",
                slipway_spec::model::IdlePolicy::Wait => "steps without traffic wait for it",
            };
            format!(
                "canary: {}, each baking {bake} with analysis against the stable release ({idle})",
                steps.join(" → ")
            )
        }
    }
}

/// Whether a service gets traffic through the proxy.
pub(crate) fn routed(service: &ResolvedService) -> bool {
    service.kind == ServiceKind::Web && service.port.is_some()
}

/// Moves one service of a deployment to its new release.
pub(crate) async fn move_service(run: &Run, name: &str) -> Result<(), Stop> {
    let Some(spec) = run.new.service(name).cloned() else {
        return Ok(());
    };
    let strategy = run
        .state()
        .services
        .get(name)
        .map_or(spec.strategy.kind, |p| p.strategy);
    run.progress(name, |p| {
        p.phase = "moving".into();
        p.detail = format!("moving to {}", run.new.release.id);
    })
    .await?;
    let old = run
        .old
        .as_ref()
        .and_then(|o| o.service(name).map(|s| (o, s.clone())));
    match (spec.kind, old) {
        // A service new in this release just starts.
        (_, None) => {
            run.bring_up(&run.new, name, spec.replicas).await?;
            if routed(&spec) {
                run.route(
                    name,
                    Some(ServiceTraffic::stable(&run.new.release.id, &spec)),
                )
                .await?;
            }
        }
        (ServiceKind::Cron, Some((old, _))) => {
            run.platform
                .remove_set(&run.environment, name, &old.release.id)
                .await;
            run.progress(name, |p| p.old_replicas = 0).await?;
            run.bring_up(&run.new, name, spec.replicas).await?;
        }
        (_, Some((old, old_spec))) => match strategy {
            StrategyKind::Recreate => recreate::run(run, &spec, old, &old_spec).await?,
            StrategyKind::Rolling => rolling::run(run, &spec, old, &old_spec).await?,
            StrategyKind::BlueGreen => blue_green::run(run, &spec, old, &old_spec).await?,
            StrategyKind::Canary => canary::run(run, &spec, old, &old_spec).await?,
        },
    }
    run.progress(name, |p| {
        p.phase = "done".into();
        p.new_replicas = spec.replicas;
        if routed(&spec) {
            p.weight = 100.0;
        }
        p.detail = format!("all on {}", run.new.release.id);
    })
    .await?;
    Ok(())
}

/// When the deploy has smoke checks for this service: puts the new release (already up) on the
/// preview route, beside whatever the old one serves, and runs them through it, before any
/// traffic moves. A failure stops the deploy with the users none the wiser.
pub(crate) async fn preview_smoke(
    run: &Run,
    spec: &ResolvedService,
    old: Option<&crate::run::Loaded>,
) -> Result<(), Stop> {
    let Some(plan) = run.state().smoke.filter(|p| p.service == spec.name) else {
        return Ok(());
    };
    let mut traffic = match old {
        Some(o) => ServiceTraffic::stable(&o.release.id, spec),
        None => ServiceTraffic {
            pools: Vec::new(),
            ..ServiceTraffic::stable(&run.new.release.id, spec)
        },
    };
    traffic.pools.push(PlannedPool {
        release: run.new.release.id.clone(),
        track: Track::Preview,
        weight: 0.0,
    });
    run.route(&spec.name, Some(traffic)).await?;
    let Some(address) = run
        .platform
        .preview_address(&run.environment, &spec.name)
        .await
    else {
        return Err(Stop::Failed(format!(
            "{}: the proxy opened no preview route for the smoke test",
            spec.name
        )));
    };
    run.progress(&spec.name, |p| {
        p.detail = format!("smoke test of {} on the preview route", run.new.release.id);
    })
    .await?;
    let results = crate::smoke::run(&plan, &format!("http://{address}"), &[], &run.shutdown).await;
    run.check()?;
    match results {
        Ok(results) => {
            run.info(
                "deploy.smoke_passed",
                format!(
                    "{}: {} smoke check(s) passed on the preview of {}",
                    spec.name,
                    results.len(),
                    run.new.release.id
                ),
                crate::run::about(&spec.name, serde_json::json!({ "checks": results })),
            )
            .await;
            Ok(())
        }
        Err(results) => Err(Stop::Failed(format!(
            "{}: {} on the preview of {}, before it got any traffic",
            spec.name,
            crate::smoke::failure(&results),
            run.new.release.id
        ))),
    }
}

/// All of a routed service's traffic to the new release (as its stable pool), recorded as an
/// event of `kind`; then the old release's requests in flight finish.
pub(crate) async fn switch_all(
    run: &Run,
    spec: &ResolvedService,
    old: &crate::run::Loaded,
    old_spec: &ResolvedService,
    kind: &str,
) -> Result<(), Stop> {
    run.check()?;
    run.route(
        &spec.name,
        Some(ServiceTraffic::stable(&run.new.release.id, spec)),
    )
    .await?;
    run.info(
        kind,
        format!("{}: all traffic on {}", spec.name, run.new.release.id),
        crate::run::about(&spec.name, serde_json::json!({})),
    )
    .await;
    run.drained(old_spec, &old.release.id, None).await;
    Ok(())
}

/// Stable on `old` and the rest on `new` as the canary (pools of weight 0 left out).
pub(crate) fn split(
    old: &str,
    new: &str,
    new_weight: f64,
    service: &ResolvedService,
    tenants: bool,
) -> ServiceTraffic {
    let strategy = &service.strategy;
    let mut pools = Vec::new();
    if new_weight < 100.0 {
        pools.push(PlannedPool {
            release: old.to_string(),
            track: Track::Stable,
            weight: 100.0 - new_weight,
        });
    }
    if new_weight > 0.0 {
        pools.push(PlannedPool {
            release: new.to_string(),
            track: Track::Canary,
            weight: new_weight,
        });
    }
    ServiceTraffic {
        port: service.port.unwrap_or(0),
        drain_ms: u64::try_from(service.drain.std().as_millis()).unwrap_or(u64::MAX),
        pools,
        sticky_cookie: strategy.sticky_cookie.clone(),
        sticky_header: strategy.sticky_header.clone(),
        canary_tenants: if tenants {
            strategy.canary_tenants.clone()
        } else {
            Vec::new()
        },
    }
}
