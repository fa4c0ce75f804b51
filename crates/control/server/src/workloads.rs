//! The control plane's workloads: one [`Runtime`] per environment brought up, all on one
//! runtime driver (the local-process driver by default), and their view in the API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use slipway_api::{CheckResult, CronRun, InstanceStatus, ServiceStatus, TrafficShare};
use slipway_runtime::supervisor::RuntimeError;
use slipway_runtime::{Driver, Release, Runtime, RuntimeOptions};
use slipway_spec::ResolvedEnv;
use slipway_store::Store;
use tokio::sync::Mutex;

use crate::dataplane::{DataPlane, Routed};

/// See the module docs.
pub(crate) struct Workloads {
    driver: Arc<dyn Driver>,
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    runtimes: Mutex<HashMap<String, Arc<Runtime>>>,
    releases: Mutex<HashMap<String, Release>>,
    envs: Mutex<HashMap<String, ResolvedEnv>>,
    dataplane: Option<Arc<DataPlane>>,
}

impl Workloads {
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        store: Arc<dyn Store>,
        options: RuntimeOptions,
        dataplane: Option<Arc<DataPlane>>,
    ) -> Self {
        Workloads {
            driver,
            store,
            options,
            runtimes: Mutex::new(HashMap::new()),
            releases: Mutex::new(HashMap::new()),
            envs: Mutex::new(HashMap::new()),
            dataplane,
        }
    }

    /// Starts (or re-adopts) the proxy and keeps its routes in step with ready instances.
    pub(crate) async fn start_dataplane(self: &Arc<Self>) {
        let Some(dataplane) = &self.dataplane else {
            return;
        };
        let found = self.driver.list().await.unwrap_or_default();
        dataplane.start(found).await;
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let Some(this) = this.upgrade() else { return };
                this.sync_routes().await;
            }
        });
    }

    /// Pushes the routes of every web service with a public port.
    pub(crate) async fn sync_routes(&self) {
        let Some(dataplane) = &self.dataplane else {
            return;
        };
        let envs: Vec<ResolvedEnv> = self.envs.lock().await.values().cloned().collect();
        let mut routed = Vec::new();
        for env in envs {
            let (Some(runtime), Some(release)) = (
                self.runtime(&env.environment).await,
                self.release(&env.environment).await,
            ) else {
                continue;
            };
            let statuses = runtime.status().await;
            for service in env.services.values() {
                let Some(port) = service.port else { continue };
                if service.kind != slipway_spec::model::ServiceKind::Web {
                    continue;
                }
                let Some(status) = statuses.iter().find(|s| s.name == service.name) else {
                    continue;
                };
                routed.push(Routed {
                    environment: env.environment.clone(),
                    service: service.name.clone(),
                    port,
                    release: release.id.clone(),
                    drain: service.drain.std(),
                    status: status.clone(),
                });
            }
        }
        routed.sort_by(|a, b| (&a.environment, &a.service).cmp(&(&b.environment, &b.service)));
        dataplane.sync(&routed).await;
    }

    /// Brings `env` to its applied configuration (generation `generation`).
    pub(crate) async fn apply(&self, env: &ResolvedEnv, generation: i64) {
        let runtime = {
            let mut runtimes = self.runtimes.lock().await;
            runtimes
                .entry(env.environment.clone())
                .or_insert_with(|| {
                    let mut options = self.options.clone();
                    options.logs = slipway_runtime::driver::LogPolicy {
                        max_size: env.logs.max_size,
                        keep: env.logs.keep,
                    };
                    Arc::new(Runtime::new(
                        self.driver.clone(),
                        self.store.clone(),
                        options,
                    ))
                })
                .clone()
        };
        let release = Release {
            id: format!("r{generation}"),
            version: code_version(&env.dir),
        };
        runtime.apply(env, &release).await;
        self.envs
            .lock()
            .await
            .insert(env.environment.clone(), env.clone());
        self.releases
            .lock()
            .await
            .insert(env.environment.clone(), release);
    }

    /// The release an environment runs.
    pub(crate) async fn release(&self, environment: &str) -> Option<Release> {
        self.releases.lock().await.get(environment).cloned()
    }

    pub(crate) async fn runtime(&self, environment: &str) -> Option<Arc<Runtime>> {
        self.runtimes.lock().await.get(environment).cloned()
    }

    /// Stops every instance of every environment, and the proxy.
    pub(crate) async fn stop_all(&self) {
        let all: Vec<Arc<Runtime>> = self.runtimes.lock().await.values().cloned().collect();
        for r in all {
            r.stop_all().await;
        }
        if let Some(d) = &self.dataplane {
            d.stop().await;
        }
    }

    /// Leaves every instance, and the proxy, running for the next control plane.
    pub(crate) async fn detach_all(&self) {
        if let Some(d) = &self.dataplane {
            d.detach();
        }
        let all: Vec<Arc<Runtime>> = self.runtimes.lock().await.values().cloned().collect();
        for r in all {
            r.detach().await;
        }
    }

    /// The API view of an environment's services, if it is brought up.
    pub(crate) async fn status(&self, environment: &str) -> Option<Vec<ServiceStatus>> {
        let runtime = self.runtime(environment).await?;
        let table = self.dataplane.as_ref().and_then(|d| d.table());
        Some(
            runtime
                .status()
                .await
                .into_iter()
                .map(|s| {
                    let route = table.as_ref().and_then(|t| {
                        t.routes
                            .iter()
                            .find(|r| r.environment == environment && r.service == s.name)
                            .cloned()
                    });
                    to_api(s, route)
                })
                .collect(),
        )
    }

    /// Starts a cron run now.
    pub(crate) async fn run_now(
        &self,
        environment: &str,
        service: &str,
    ) -> Option<Result<String, RuntimeError>> {
        let runtime = self.runtime(environment).await?;
        Some(runtime.run_now(service).await)
    }
}

/// The code version of the project folder: the git commit when it is a repository.
fn code_version(dir: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

fn to_api(s: slipway_runtime::ServiceStatus, route: Option<slipway_proxy::Route>) -> ServiceStatus {
    ServiceStatus {
        name: s.name,
        kind: s.kind.as_str().to_string(),
        replicas: s.replicas,
        // The port the proxy listens on (resolved when the file says 0).
        port: route
            .as_ref()
            .and_then(|r| r.listen.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok()),
        state: s.state,
        restarts: s.restarts,
        last_exit: s.last_exit,
        instances: s
            .instances
            .into_iter()
            .map(|i| InstanceStatus {
                id: i.id,
                pid: Some(i.pid),
                release: i.release,
                state: i.state,
                health: i.health,
                port: i.port,
                slot: i.slot,
                started_at: Some(i.started_at),
                adopted: i.adopted,
                cpu_percent: i.cpu_percent,
                rss_bytes: i.rss_bytes,
                checks: i
                    .checks
                    .into_iter()
                    .map(|c| CheckResult {
                        at: c.at,
                        ok: c.ok,
                        detail: c.detail,
                        ms: c.ms,
                    })
                    .collect(),
            })
            .collect(),
        traffic: route
            .map(|r| {
                r.pools
                    .into_iter()
                    .map(|p| TrafficShare {
                        release: p.release,
                        track: p.track.as_str().to_string(),
                        weight: p.weight,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        next_run: s.next_run,
        runs: s
            .runs
            .into_iter()
            .map(|r| CronRun {
                id: r.id,
                trigger: r.trigger,
                started_at: r.started_at,
                finished_at: r.finished_at,
                exit_code: r.exit_code,
                outcome: r.outcome,
                duration_ms: r.duration_ms,
            })
            .collect(),
    }
}
