//! `blue-green`: a full set of the new release starts beside the old one and is reachable only
//! on the preview route (the preview listener, or `x-slipway-track: preview`). Once it is ready
//! and its readiness path answers 2xx through the preview route, all traffic switches at once;
//! the old set stays warm as a standby for an instant rollback (the finishing step keeps it).

use std::time::Duration;

use serde_json::json;
use slipway_proxy::Track;
use slipway_spec::resolve::{ProbeCheck, ResolvedService};

use crate::platform::{PlannedPool, ServiceTraffic};
use crate::run::{Loaded, Run, Stop, about};

pub(super) async fn run(
    run: &Run,
    spec: &ResolvedService,
    old: &Loaded,
    old_spec: &ResolvedService,
) -> Result<(), Stop> {
    let name = spec.name.as_str();
    run.progress(name, |p| {
        p.new_replicas = spec.replicas;
        p.detail = format!(
            "starting {} instance(s) of {}",
            spec.replicas, run.new.release.id
        );
    })
    .await?;
    run.bring_up(&run.new, name, spec.replicas).await?;
    let mut preview = ServiceTraffic::stable(&old.release.id, spec);
    preview.pools.push(PlannedPool {
        release: run.new.release.id.clone(),
        track: Track::Preview,
        weight: 0.0,
    });
    run.route(name, Some(preview)).await?;
    let address = run.platform.preview_address(&run.environment, name).await;
    run.progress(name, |p| {
        p.detail = format!(
            "{} ready on the preview route{}",
            run.new.release.id,
            address
                .as_ref()
                .map(|a| format!(" (http://{a})"))
                .unwrap_or_default()
        );
    })
    .await?;
    run.info(
        "deploy.preview",
        format!(
            "{name}: {} is on the preview route{}",
            run.new.release.id,
            address
                .as_ref()
                .map(|a| format!(" at http://{a}"))
                .unwrap_or_default()
        ),
        about(name, json!({ "preview": address })),
    )
    .await;
    if run
        .state()
        .smoke
        .as_ref()
        .is_some_and(|p| p.service == name)
    {
        super::preview_smoke(run, spec, Some(old)).await?;
    } else if let (Some(address), Some(ProbeCheck::Http { path, status })) =
        (&address, spec.readiness.as_ref().map(|p| &p.check))
    {
        smoke(run, name, address, path, *status).await?;
    }
    super::switch_all(run, spec, old, old_spec, "deploy.switched").await
}

/// The readiness path must answer (2xx, or the expected status) through the preview route.
async fn smoke(
    run: &Run,
    name: &str,
    address: &str,
    path: &str,
    expected: Option<u16>,
) -> Result<(), Stop> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Stop::Failed(format!("cannot build an HTTP client: {e}")))?;
    let url = format!("http://{address}{path}");
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            run.sleep(Duration::from_millis(200 * attempt)).await?;
        }
        match client.get(&url).send().await {
            Ok(r) => {
                let ok = match expected {
                    Some(s) => r.status().as_u16() == s,
                    None => r.status().is_success(),
                };
                if ok {
                    return Ok(());
                }
                last = format!("answered {}", r.status());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(Stop::Failed(format!(
        "{name}: the smoke check of the preview failed: GET {url} {last}"
    )))
}
