//! `recreate`: the old instances stop, then the new ones start. Nothing overlaps, so a web
//! service answers 503 in between (the seeds' brief-downtime mode, and the baseline the other
//! strategies are measured against).

use slipway_spec::resolve::ResolvedService;

use super::routed;
use crate::platform::ServiceTraffic;
use crate::run::{Loaded, Run, Stop};

pub(super) async fn run(
    run: &Run,
    spec: &ResolvedService,
    old: &Loaded,
    _old_spec: &ResolvedService,
) -> Result<(), Stop> {
    let name = &spec.name;
    run.progress(name, |p| {
        p.old_replicas = 0;
        p.detail = format!("stopping {}", old.release.id);
    })
    .await?;
    run.platform
        .ensure_set(&old.snapshot.config, &old.release, name, 0)
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?;
    run.progress(name, |p| {
        p.new_replicas = spec.replicas;
        p.detail = format!("starting {}", run.new.release.id);
    })
    .await?;
    run.bring_up(&run.new, name, spec.replicas).await?;
    if routed(spec) {
        super::preview_smoke(run, spec, Some(old)).await?;
        run.route(
            name,
            Some(ServiceTraffic::stable(&run.new.release.id, spec)),
        )
        .await?;
    }
    Ok(())
}
