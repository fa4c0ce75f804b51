//! The git watcher: every `[pipeline] watch.interval` it lists the heads of the watched
//! repository (`git ls-remote`, local path or remote URL) and starts a run for each environment
//! whose `branch` or `tag` pattern matches a head that moved. The heads it last saw are kept in
//! the store, so pushes made while the control plane was down start runs at its next start; the
//! very first look only records them. After a manual rollback an environment's automatic runs
//! pause (a push would re-deploy what was just rolled back) until someone runs its pipeline or
//! deploys by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use slipway_spec::pipeline::glob_match;
use slipway_store::{EventLevel, NewEvent};
use tokio_util::sync::CancellationToken;

use crate::git::Repo;
use crate::runner::{Pipelines, RunRequest};

const HEADS_KEY: &str = "pipeline.watch.heads";

impl Pipelines {
    /// Watches the repository of `[pipeline] watch` until `stop`.
    pub fn start_watcher(&self, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let interval = match this.watch_once().await {
                    Ok(Some(i)) => {
                        failing = false;
                        i
                    }
                    Ok(None) => Duration::from_secs(5),
                    Err(e) => {
                        if !failing {
                            this.event(
                                NewEvent::info(
                                    "pipeline.watch_failed",
                                    format!("the git watcher cannot read the repository: {e}"),
                                )
                                .level(EventLevel::Warning),
                            )
                            .await;
                        }
                        failing = true;
                        Duration::from_secs(5)
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// One look at the repository; returns the interval until the next one (`None`: nothing
    /// is watched).
    pub async fn watch_once(&self) -> Result<Option<Duration>, String> {
        let project =
            slipway_spec::load(&self.inner.options.project_file).map_err(|e| e.to_string())?;
        let pipeline = slipway_spec::pipeline::resolve(&project.config);
        let Some((location, interval)) = pipeline.watch else {
            return Ok(None);
        };
        let repo = Repo::new(&location, &project.dir);
        let heads: BTreeMap<String, String> = repo
            .heads()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        let store = &self.inner.store;
        let last: Option<BTreeMap<String, String>> = store
            .meta(HEADS_KEY)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|t| serde_json::from_str(&t).ok());
        store
            .set_meta(
                HEADS_KEY,
                &serde_json::to_string(&heads).unwrap_or_default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = last else {
            self.event(NewEvent::info(
                "pipeline.watching",
                format!(
                    "watching {} every {} ({} heads); pushes start runs from now on",
                    repo.location,
                    interval,
                    heads.len()
                ),
            ))
            .await;
            return Ok(Some(interval.std()));
        };
        for (name, sha) in &heads {
            if last.get(name) == Some(sha) {
                continue;
            }
            let (branch, tag) = if let Some(b) = name.strip_prefix("refs/heads/") {
                (Some(b), None)
            } else if let Some(t) = name.strip_prefix("refs/tags/") {
                (None, Some(t))
            } else {
                continue;
            };
            for env in project.environments() {
                let Ok(config) = project.resolve(&env) else {
                    continue;
                };
                let hit = match (branch, tag) {
                    (Some(b), _) => config
                        .gate
                        .branch
                        .as_deref()
                        .is_some_and(|p| glob_match(p, b)),
                    (_, Some(t)) => config.gate.tag.as_deref().is_some_and(|p| glob_match(p, t)),
                    _ => false,
                };
                if !hit {
                    continue;
                }
                let paused = store
                    .deployments(Some(&env), 1)
                    .await
                    .ok()
                    .and_then(|d| d.into_iter().next())
                    .is_some_and(|d| d.kind == "rollback");
                let short_name = branch.or(tag).unwrap_or(name);
                if paused {
                    self.event(
                        NewEvent::info(
                            "pipeline.push_ignored",
                            format!(
                                "push of {short_name} at {} not run in {env}: automatic runs pause after a rollback; `slipway --env {env} pipeline run` resumes them",
                                crate::runner::short(sha)
                            ),
                        )
                        .level(EventLevel::Warning)
                        .environment(&env),
                    )
                    .await;
                    continue;
                }
                if let Err(e) = self
                    .start(RunRequest {
                        environment: env.clone(),
                        git_ref: Some(short_name.to_string()),
                        commit: Some(sha.clone()),
                        trigger: "push".into(),
                        actor: "git watcher".into(),
                    })
                    .await
                {
                    self.event(
                        NewEvent::info(
                            "pipeline.watch_failed",
                            format!("cannot start a run of {env} for {short_name}: {e}"),
                        )
                        .level(EventLevel::Warning)
                        .environment(&env),
                    )
                    .await;
                }
            }
        }
        Ok(Some(interval.std()))
    }
}
