//! `rolling`: up to `max_surge` new instances come up and become ready, then old ones are
//! taken out of traffic, drained and stopped, keeping at least `replicas − max_unavailable`
//! ready throughout; repeated until only new ones are left. While both releases serve, each
//! gets the share of traffic its ready instances make. Workers do the same, with `overlap`
//! between a batch of new workers being ready and the old ones being stopped.

use slipway_spec::resolve::ResolvedService;

use super::{routed, split};
use crate::run::{Loaded, Run, Stop};

pub(super) async fn run(
    run: &Run,
    spec: &ResolvedService,
    old: &Loaded,
    old_spec: &ResolvedService,
) -> Result<(), Stop> {
    let name = spec.name.as_str();
    let wanted = spec.replicas;
    let surge = if spec.strategy.max_surge == 0 && spec.strategy.max_unavailable == 0 {
        1
    } else {
        spec.strategy.max_surge
    };
    let unavailable = spec.strategy.max_unavailable.min(wanted);
    let progress = run.state().services.get(name).cloned();
    let mut new_n = progress.as_ref().map_or(0, |p| p.new_replicas);
    let mut old_n = progress.map_or(old_spec.replicas, |p| p.old_replicas);
    let traffic = routed(spec);
    let share = |new_n: u32, old_n: u32| {
        if new_n + old_n == 0 {
            0.0
        } else {
            f64::from(new_n) * 100.0 / f64::from(new_n + old_n)
        }
    };
    while new_n < wanted || old_n > 0 {
        run.check()?;
        let target_new = wanted
            .min((wanted + surge).saturating_sub(old_n))
            .max(new_n);
        if target_new > new_n {
            run.progress(name, |p| {
                p.new_replicas = target_new;
                p.detail = format!(
                    "{target_new} of {wanted} on {} (starting)",
                    run.new.release.id
                );
            })
            .await?;
            run.bring_up(&run.new, name, target_new).await?;
            if traffic && new_n == 0 {
                super::preview_smoke(run, spec, Some(old)).await?;
            }
            new_n = target_new;
            if traffic {
                let w = share(new_n, old_n);
                run.route(
                    name,
                    Some(split(&old.release.id, &run.new.release.id, w, spec, false)),
                )
                .await?;
            } else if !spec.strategy.overlap.std().is_zero() {
                run.sleep(spec.strategy.overlap.std()).await?;
            }
        }
        let target_old = old_n.min(wanted.saturating_sub(unavailable).saturating_sub(new_n));
        if target_old < old_n {
            run.progress(name, |p| {
                p.old_replicas = target_old;
                p.detail = format!(
                    "{new_n} of {wanted} on {}; stopping old",
                    run.new.release.id
                );
            })
            .await?;
            if traffic {
                let leaving: Vec<String> = run
                    .platform
                    .sets(&run.environment)
                    .await
                    .into_iter()
                    .filter(|s| s.service == name && s.release == old.release.id)
                    .flat_map(|s| s.instances)
                    .filter(|i| i.slot >= target_old)
                    .map(|i| i.id)
                    .collect();
                run.platform
                    .retire_from(&run.environment, name, &old.release.id, target_old)
                    .await;
                let w = share(new_n, target_old);
                run.route(
                    name,
                    Some(split(&old.release.id, &run.new.release.id, w, spec, false)),
                )
                .await?;
                run.drained(old_spec, &old.release.id, Some(&leaving)).await;
            }
            run.platform
                .ensure_set(&old.snapshot.config, &old.release, name, target_old)
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?;
            old_n = target_old;
        } else if target_new == new_n {
            return Err(Stop::Failed(format!(
                "{name}: a rolling update cannot progress with max_surge {} and max_unavailable {}",
                spec.strategy.max_surge, spec.strategy.max_unavailable
            )));
        }
    }
    if traffic {
        super::switch_all(run, spec, old, old_spec, "deploy.switched").await?;
    }
    Ok(())
}
