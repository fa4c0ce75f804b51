//! The control plane's workloads: one [`Runtime`] per environment, all on one runtime driver
//! (the local-process driver by default), the traffic plan of every web service, and the loop
//! that keeps the proxy's routes in step with both. This is the [`Platform`] the deploy engine
//! drives, and the view `status` shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use slipway_api::{CheckResult, CronRun, InstanceStatus, ServiceStatus, TrafficShare};
use slipway_deploy::{Platform, PlatformError, PoolKey, ServiceTraffic};
use slipway_proxy::metrics::{PoolSample, WindowStats};
use slipway_runtime::supervisor::{RuntimeError, SetStatus};
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
    /// Traffic plans by (environment, service).
    plans: std::sync::Mutex<BTreeMap<(String, String), ServiceTraffic>>,
    dataplane: Option<Arc<DataPlane>>,
    /// One route push at a time.
    syncing: Mutex<()>,
    /// Mixed into secret digests, so a digest cannot be checked against guesses elsewhere.
    secret_salt: String,
}

fn plans_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workloads {
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        store: Arc<dyn Store>,
        options: RuntimeOptions,
        dataplane: Option<Arc<DataPlane>>,
        secret_salt: String,
    ) -> Self {
        Workloads {
            driver,
            store,
            options,
            runtimes: Mutex::new(HashMap::new()),
            plans: std::sync::Mutex::new(BTreeMap::new()),
            dataplane,
            syncing: Mutex::new(()),
            secret_salt,
        }
    }

    /// Starts (or re-adopts) the proxy.
    pub(crate) async fn start_dataplane(&self) {
        let Some(dataplane) = &self.dataplane else {
            return;
        };
        let found = self.driver.list().await.unwrap_or_default();
        dataplane.start(found).await;
    }

    /// Keeps the proxy's routes in step with ready instances from now on.
    pub(crate) fn start_route_sync(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(this) = this.upgrade() else { return };
                let _ = this.sync_routes().await;
            }
        });
    }

    /// Pushes the routes of every planned web service.
    pub(crate) async fn sync_routes(&self) -> Result<(), crate::dataplane::SyncError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(());
        };
        let _one_at_a_time = self.syncing.lock().await;
        let plans = plans_lock(&self.plans).clone();
        let mut statuses: HashMap<String, Vec<slipway_runtime::ServiceStatus>> = HashMap::new();
        let mut routed = Vec::new();
        for ((environment, service), plan) in plans {
            if !statuses.contains_key(&environment) {
                let s = match self.existing_runtime(&environment).await {
                    Some(r) => r.status().await,
                    None => Vec::new(),
                };
                statuses.insert(environment.clone(), s);
            }
            let status = statuses[&environment]
                .iter()
                .find(|s| s.name == service)
                .cloned();
            routed.push(Routed {
                environment,
                service,
                plan,
                status,
            });
        }
        dataplane.sync(&routed).await
    }

    /// The runtime of an environment, created on first use.
    pub(crate) async fn runtime(&self, env: &ResolvedEnv) -> Arc<Runtime> {
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
                    &env.environment,
                ))
            })
            .clone()
    }

    pub(crate) async fn existing_runtime(&self, environment: &str) -> Option<Arc<Runtime>> {
        self.runtimes.lock().await.get(environment).cloned()
    }

    /// Digests of the secret values the services get (never the values).
    pub(crate) fn secret_versions(&self) -> IndexMap<String, String> {
        use sha2::{Digest, Sha256};
        self.options
            .secrets
            .iter()
            .map(|(name, value)| {
                let mut h = Sha256::new();
                h.update(self.secret_salt.as_bytes());
                h.update(name.as_bytes());
                h.update([0]);
                h.update(value.as_bytes());
                (name.clone(), hex::encode(&h.finalize()[..6]))
            })
            .collect()
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
        let runtime = self.existing_runtime(environment).await?;
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

    /// The environments with a runtime (brought up since start).
    pub(crate) async fn environments(&self) -> Vec<String> {
        let mut envs: Vec<String> = self.runtimes.lock().await.keys().cloned().collect();
        envs.sort();
        envs
    }

    /// Every instance metrics endpoint, by environment.
    pub(crate) async fn scrape_endpoints(
        &self,
    ) -> Vec<(String, slipway_runtime::supervisor::ScrapeEndpoint)> {
        let runtimes: Vec<(String, Arc<Runtime>)> = self
            .runtimes
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (env, r) in runtimes {
            for e in r.scrape_endpoints().await {
                out.push((env.clone(), e));
            }
        }
        out
    }

    /// The proxy's metrics endpoint and its token.
    pub(crate) fn proxy_metrics(&self) -> Option<(String, String)> {
        self.dataplane.as_ref().map(|d| {
            (
                format!("http://{}/metrics", d.admin()),
                d.token().to_string(),
            )
        })
    }

    /// Starts a cron run now.
    pub(crate) async fn run_now(
        &self,
        environment: &str,
        service: &str,
    ) -> Option<Result<String, RuntimeError>> {
        let runtime = self.existing_runtime(environment).await?;
        Some(runtime.run_now(service).await)
    }

    fn route(&self, environment: &str, service: &str) -> Option<slipway_proxy::Route> {
        let table = self.dataplane.as_ref()?.table()?;
        table
            .routes
            .into_iter()
            .find(|r| r.environment == environment && r.service == service)
    }
}

fn err(e: impl std::fmt::Display) -> PlatformError {
    PlatformError(e.to_string())
}

#[async_trait]
impl Platform for Workloads {
    async fn ensure_set(
        &self,
        config: &ResolvedEnv,
        release: &Release,
        service: &str,
        replicas: u32,
    ) -> Result<(), PlatformError> {
        self.runtime(config)
            .await
            .ensure(config, release, service, replicas)
            .await
            .map_err(err)
    }

    async fn retire_from(&self, environment: &str, service: &str, release: &str, from: u32) {
        if let Some(r) = self.existing_runtime(environment).await {
            r.retire_from(service, release, from).await;
        }
    }

    async fn remove_set(&self, environment: &str, service: &str, release: &str) {
        if let Some(r) = self.existing_runtime(environment).await {
            r.remove(service, release).await;
        }
    }

    async fn sets(&self, environment: &str) -> Vec<SetStatus> {
        match self.existing_runtime(environment).await {
            Some(r) => r.sets().await,
            None => Vec::new(),
        }
    }

    async fn release_unclaimed(&self, environment: &str) {
        if let Some(r) = self.existing_runtime(environment).await {
            r.release_unclaimed().await;
        }
    }

    fn command_environment(
        &self,
        config: &ResolvedEnv,
        release: &Release,
        service: &str,
    ) -> Result<(IndexMap<String, String>, Vec<String>), PlatformError> {
        let spec = config
            .services
            .get(service)
            .ok_or_else(|| err(format!("no service `{service}`")))?;
        slipway_runtime::supervisor::environment_of(&self.options, config, release, spec)
            .map_err(err)
    }

    async fn set_traffic(
        &self,
        environment: &str,
        service: &str,
        plan: Option<ServiceTraffic>,
    ) -> Result<(), PlatformError> {
        let key = (environment.to_string(), service.to_string());
        let before = {
            let mut plans = plans_lock(&self.plans);
            match plan {
                Some(p) => plans.insert(key.clone(), p),
                None => plans.remove(&key),
            }
        };
        // The proxy may be restarting (it is back within milliseconds): try for a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.sync_routes().await {
                Ok(()) => return Ok(()),
                // The proxy cannot serve it (a port in use): the plan goes back to what it
                // was, or every later push would carry it and be refused too.
                Err(e @ crate::dataplane::SyncError::Refused(_)) => {
                    let mut plans = plans_lock(&self.plans);
                    match before {
                        Some(p) => plans.insert(key, p),
                        None => plans.remove(&key),
                    };
                    return Err(err(e));
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(err(e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn samples(&self) -> Result<Vec<PoolSample>, PlatformError> {
        match &self.dataplane {
            Some(d) => d.samples().await.map_err(err),
            None => Err(err("the proxy could not be prepared")),
        }
    }

    async fn window_stats(
        &self,
        window: Duration,
    ) -> Result<Vec<(PoolKey, WindowStats)>, PlatformError> {
        match &self.dataplane {
            Some(d) => d.window_stats(window).await.map_err(err),
            None => Err(err("the proxy could not be prepared")),
        }
    }

    async fn preview_address(&self, environment: &str, service: &str) -> Option<String> {
        self.route(environment, service)?.preview_listen
    }

    async fn prune(&self, environment: &str, release: &Release) {
        let dir = self
            .options
            .releases_dir
            .join(environment)
            .join(&release.id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a pruned release");
        }
    }

    async fn public_address(&self, environment: &str, service: &str) -> Option<String> {
        Some(self.route(environment, service)?.listen)
    }

    async fn recent_output(
        &self,
        environment: &str,
        service: &str,
        release: &str,
        lines: usize,
    ) -> Vec<String> {
        match self.existing_runtime(environment).await {
            Some(r) => r.recent_output(service, release, lines).await,
            None => Vec::new(),
        }
    }
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
                pid: i.pid,
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
        sets: s
            .sets
            .into_iter()
            .map(|x| slipway_api::SetReadiness {
                release: x.release,
                replicas: x.replicas,
                ready: x.ready,
                role: String::new(),
            })
            .collect(),
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
