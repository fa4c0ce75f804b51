//! The control plane's side of the data plane: it runs `slipway proxy` as an instance of its
//! own (through the same runtime driver, so the proxy survives control-plane restarts and is
//! re-adopted), restarts it when it dies, and keeps its route table in step with the
//! instances that are ready.
//!
//! What each web service's route holds comes from its traffic plan (which releases, on which
//! track, with which weight: the deploy engine's to set) and from the instances that are
//! ready; a pool whose release has no ready instance is left out while another has some. The
//! proxy saves every table it accepts and serves it again after a restart, so the sync here
//! only has to push a new version when the routes change, or when the proxy reports an older
//! version than the last one pushed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::json;
use slipway_deploy::ServiceTraffic;
use slipway_proxy::metrics::{PoolSample, WindowStats};
use slipway_proxy::{Backend, Pool, Route, RouteTable, Track};
use slipway_runtime::driver::{Exit, Found, Instance, InstanceSpec, LogPolicy, Verdict};
use slipway_runtime::{Driver, ServiceStatus};
use slipway_store::{EventLevel, NewEvent, Store};
use tokio_util::sync::CancellationToken;

/// The proxy's service name among the driver's instances.
pub(crate) const PROXY_SERVICE: &str = "slipway-proxy";
/// The environment of the control plane's own instances.
pub(crate) const SYSTEM_ENV: &str = "_system";

/// Why the proxy does not serve the routes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// It is not there yet (restarting), or raced: sending again helps.
    #[error("{0}")]
    Unreachable(String),
    /// It cannot serve them (a port in use): sending again does not help.
    #[error("{0}")]
    Refused(String),
}

/// A web service as the route sync sees it.
pub(crate) struct Routed {
    pub(crate) environment: String,
    pub(crate) service: String,
    /// What the deploy engine asked for.
    pub(crate) plan: ServiceTraffic,
    /// Its instances, every release's.
    pub(crate) status: Option<ServiceStatus>,
}

/// See the module docs.
pub(crate) struct DataPlane {
    driver: Arc<dyn Driver>,
    store: Arc<dyn Store>,
    dir: PathBuf,
    exe: PathBuf,
    admin: SocketAddr,
    token: String,
    client: reqwest::Client,
    instance: Mutex<Option<Instance>>,
    /// The routes last accepted by the proxy (as we asked, and as resolved).
    pushed: Mutex<Option<(Vec<Route>, RouteTable)>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl DataPlane {
    /// Prepares the proxy's directory, token and admin address (kept across restarts).
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        store: Arc<dyn Store>,
        dir: &Path,
        exe: &Path,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // The proxy runs in its own directory: every path it is given must be absolute.
        let dir = &std::path::absolute(dir)?;
        let token = slipway_proxy::ensure_token(dir).map_err(std::io::Error::other)?;
        let addr_file = dir.join("admin.addr");
        let admin = match std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|a| a.trim().parse().ok())
        {
            Some(a) => a,
            None => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                std::fs::write(&addr_file, addr.to_string())?;
                addr
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .map_err(std::io::Error::other)?,
        );
        Ok(DataPlane {
            driver,
            store,
            dir: dir.to_path_buf(),
            exe: exe.to_path_buf(),
            admin,
            token,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(std::io::Error::other)?,
            instance: Mutex::new(None),
            pushed: Mutex::new(None),
            stop: CancellationToken::new(),
        })
    }

    /// The admin address.
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The admin token (for tests and tools reading the proxy directly).
    #[allow(dead_code)]
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn spec(&self) -> InstanceSpec {
        let mut env = IndexMap::new();
        for key in ["PATH", "HOME", "LANG", "TZ", "SLIPWAY_LOG"] {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), v);
            }
        }
        InstanceSpec {
            id: format!("{PROXY_SERVICE}-{:04x}", fastrand::u16(..)),
            service: PROXY_SERVICE.into(),
            environment: SYSTEM_ENV.into(),
            release: slipway_server_version(),
            slot: 0,
            command: format!(
                "{} proxy --dir {} --admin {}",
                quote(&self.exe),
                quote(&self.dir),
                self.admin
            ),
            cwd: self.dir.clone(),
            env,
            secret_keys: Vec::new(),
            port: Some(self.admin.port()),
            heartbeat: None,
            logs: LogPolicy::default(),
            fingerprint: slipway_server_version(),
            image: None,
            resources: None,
        }
    }

    async fn event(&self, event: NewEvent) {
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }

    /// Adopts the proxy a previous control plane left running, or starts one; then keeps it
    /// running until [`stop`](Self::stop) or [`detach`](Self::detach).
    pub(crate) async fn start(self: &Arc<Self>, found: Vec<Found>) {
        let mut adopted = None;
        for f in found
            .into_iter()
            .filter(|f| f.instance.service == PROXY_SERVICE)
        {
            if f.verdict == Verdict::Running && adopted.is_none() {
                adopted = Some(f.instance);
            } else {
                if f.verdict == Verdict::Recycled {
                    self.event(
                        NewEvent::info(
                            "instance.lost",
                            format!(
                                "{}: pid {} now belongs to another process; not adopted, not signalled",
                                f.instance.id, f.instance.process.pid
                            ),
                        )
                        .level(EventLevel::Warning)
                        .subject(PROXY_SERVICE),
                    )
                    .await;
                }
                if f.verdict == Verdict::Running {
                    let _ = self
                        .driver
                        .stop(&f.instance, Default::default(), Duration::from_secs(5))
                        .await;
                }
                let _ = self.driver.remove(&f.instance).await;
            }
        }
        if let Some(i) = &adopted {
            self.event(
                NewEvent::info(
                    "proxy.adopted",
                    format!("proxy re-adopted (pid {})", i.process.pid),
                )
                .subject(PROXY_SERVICE),
            )
            .await;
        }
        let this = self.clone();
        tokio::spawn(async move { this.supervise(adopted).await });
    }

    async fn supervise(self: Arc<Self>, mut adopted: Option<Instance>) {
        let mut backoff = Duration::from_millis(100);
        let mut quick_deaths: u32 = 0;
        loop {
            let instance = match adopted.take() {
                Some(i) => i,
                None => match self.driver.start(&self.spec()).await {
                    Ok(i) => {
                        self.event(
                            NewEvent::info(
                                "proxy.started",
                                format!(
                                    "proxy started (pid {}, admin {})",
                                    i.process.pid, self.admin
                                ),
                            )
                            .subject(PROXY_SERVICE),
                        )
                        .await;
                        i
                    }
                    Err(e) => {
                        self.event(
                            NewEvent::info("proxy.failed", format!("proxy did not start: {e}"))
                                .level(EventLevel::Error)
                                .subject(PROXY_SERVICE),
                        )
                        .await;
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            *lock(&self.instance) = Some(instance.clone());
            let started = std::time::Instant::now();
            let exit = tokio::select! {
                _ = self.stop.cancelled() => return,
                exit = self.driver.wait(&instance) => exit.unwrap_or_else(|_| Exit::vanished()),
            };
            let _ = self.driver.remove(&instance).await;
            *lock(&self.instance) = None;
            self.event(
                NewEvent::info(
                    "proxy.exited",
                    format!("proxy exited ({}); restarting it", exit.describe()),
                )
                .level(EventLevel::Warning)
                .subject(PROXY_SERVICE)
                .data(json!({ "exit_code": exit.code, "signal": exit.signal })),
            )
            .await;
            // The first death comes back at once (traffic is down until it does); a proxy
            // that keeps dying quickly backs off.
            quick_deaths = if started.elapsed() > Duration::from_secs(10) {
                1
            } else {
                quick_deaths + 1
            };
            backoff = if quick_deaths <= 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
                    .saturating_mul(1 << (quick_deaths - 2).min(6))
                    .min(Duration::from_secs(5))
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Stops supervising; the proxy keeps running (and serving) for the next control plane.
    pub(crate) fn detach(&self) {
        self.stop.cancel();
    }

    /// Stops supervising and stops the proxy (`slipway down`).
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let instance = lock(&self.instance).take();
        if let Some(i) = instance {
            let _ = self
                .driver
                .stop(&i, Default::default(), Duration::from_secs(10))
                .await;
            let _ = self.driver.remove(&i).await;
        }
    }

    /// The table the proxy last accepted.
    pub(crate) fn table(&self) -> Option<RouteTable> {
        lock(&self.pushed).as_ref().map(|(_, t)| t.clone())
    }

    /// Pushes routes for these services if they changed (or the proxy lost them); `Ok` once
    /// the proxy serves them.
    pub(crate) async fn sync(&self, services: &[Routed]) -> Result<(), SyncError> {
        let routes: Vec<Route> = services.iter().map(route_for).collect();
        let (last, version) = {
            let pushed = lock(&self.pushed);
            (
                pushed.as_ref().map(|(r, _)| r.clone()),
                pushed.as_ref().map_or(0, |(_, t)| t.version),
            )
        };
        let url = |path: &str| format!("http://{}{path}", self.admin);
        let proxy_version = self
            .client
            .get(url("/healthz"))
            .send()
            .await
            .map_err(|e| SyncError::Unreachable(format!("the proxy does not answer: {e}")))?
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["version"].as_u64())
            .unwrap_or(0);
        if last.as_ref() == Some(&routes) && proxy_version == version {
            return Ok(());
        }
        let next = version.max(proxy_version) + 1;
        let table = RouteTable {
            version: next,
            routes: routes.clone(),
        };
        let r = self
            .client
            .put(url("/routes"))
            .json(&table)
            .send()
            .await
            .map_err(|e| SyncError::Unreachable(format!("the proxy does not answer: {e}")))?;
        if r.status().is_success() {
            let accepted = r.json::<RouteTable>().await.map_err(|e| {
                SyncError::Unreachable(format!("unexpected answer from the proxy: {e}"))
            })?;
            *lock(&self.pushed) = Some((routes, accepted));
            return Ok(());
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        tracing::warn!(%status, %body, "the proxy refused the route table");
        if status == reqwest::StatusCode::CONFLICT
            && let Ok(current) = self
                .client
                .get(url("/routes"))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
            && let Ok(current) = current.json::<RouteTable>().await
        {
            // Learn its version; the next round pushes past it.
            *lock(&self.pushed) = Some((Vec::new(), current));
        }
        // A table the proxy cannot serve (a port someone else has) stays refused, however
        // often it is sent; a version race is over at the next push.
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b["reason"].as_str().map(str::to_string))
                .unwrap_or(body);
            let hint = if reason.contains("in use") {
                " — another program (another project's proxy?) listens there: change the service's `port` in slipway.toml, or `port = 0` for a free one"
            } else {
                ""
            };
            return Err(SyncError::Refused(format!("{reason}{hint}")));
        }
        Err(SyncError::Unreachable(format!(
            "the proxy refused the route table ({status}): {body}"
        )))
    }

    /// Cumulative counts of every pool.
    pub(crate) async fn samples(&self) -> Result<Vec<PoolSample>, String> {
        self.client
            .get(format!("http://{}/samples", self.admin))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("the proxy does not answer: {e}"))?
            .json()
            .await
            .map_err(|e| format!("unexpected answer from the proxy: {e}"))
    }

    /// Windowed stats of every pool.
    pub(crate) async fn window_stats(
        &self,
        window: Duration,
    ) -> Result<Vec<(slipway_deploy::PoolKey, WindowStats)>, String> {
        let values: Vec<serde_json::Value> = self
            .client
            .get(format!(
                "http://{}/stats?window={}",
                self.admin,
                window.as_secs().max(1)
            ))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("the proxy does not answer: {e}"))?
            .json()
            .await
            .map_err(|e| format!("unexpected answer from the proxy: {e}"))?;
        Ok(values
            .into_iter()
            .filter_map(|v| {
                let key = slipway_deploy::PoolKey {
                    environment: v["environment"].as_str()?.to_string(),
                    service: v["service"].as_str()?.to_string(),
                    release: v["release"].as_str()?.to_string(),
                    track: Track::parse(v["track"].as_str()?)?,
                };
                Some((key, serde_json::from_value(v).ok()?))
            })
            .collect())
    }
}

fn slipway_server_version() -> String {
    crate::VERSION.to_string()
}

/// Whether an instance may get traffic: running (not retiring) and ready — or just adopted
/// from a previous control plane and not checked yet, since the proxy was sending it traffic
/// all along.
fn routable(i: &slipway_runtime::supervisor::InstanceStatus) -> bool {
    i.state == "running" && (i.health == "healthy" || (i.adopted && i.health == "starting"))
}

/// The route of one web service: its plan's pools with their ready instances. A pool with no
/// ready instance is left out while another pool has some (its share goes to the others); the
/// preview pool stays, reachable on its own listener.
fn route_for(r: &Routed) -> Route {
    let mut pools: Vec<Pool> = r
        .plan
        .pools
        .iter()
        .map(|p| {
            let mut backends: Vec<Backend> = r
                .status
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| i.release == p.release && routable(i))
                .filter_map(|i| {
                    Some(Backend {
                        id: i.id.clone(),
                        addr: format!("127.0.0.1:{}", i.port?),
                    })
                })
                .collect();
            backends.sort_by(|a, b| a.id.cmp(&b.id));
            Pool {
                release: p.release.clone(),
                track: p.track,
                weight: p.weight,
                backends,
            }
        })
        .collect();
    let serving = pools
        .iter()
        .any(|p| p.track != Track::Preview && !p.backends.is_empty());
    if serving {
        pools.retain(|p| p.track == Track::Preview || !p.backends.is_empty());
    }
    let preview = pools.iter().any(|p| p.track == Track::Preview);
    Route {
        environment: r.environment.clone(),
        service: r.service.clone(),
        listen: format!("127.0.0.1:{}", r.plan.port),
        host: None,
        path_prefix: None,
        preview_listen: preview.then(|| "127.0.0.1:0".to_string()),
        sticky: slipway_proxy::table::Sticky {
            cookie: Some(r.plan.sticky_cookie.clone()),
            header: r.plan.sticky_header.clone(),
        },
        canary_tenants: r.plan.canary_tenants.clone(),
        drain_ms: r.plan.drain_ms,
        mode: Default::default(),
        max_body_bytes: 10 * 1024 * 1024,
        timeout_ms: 60_000,
        pools,
    }
}
