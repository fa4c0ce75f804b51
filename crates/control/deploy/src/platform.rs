//! What the engine drives: the workloads (sets of instances per service and release) and the
//! data plane (a traffic plan per service). The control plane implements [`Platform`] with
//! its runtimes and its proxy; the engine never touches processes or the proxy itself.
//!
//! Every call that changes something returns once the change is in effect: a traffic plan
//! once the proxy has accepted a table with it, a removed set once its instances are gone.

use async_trait::async_trait;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use slipway_proxy::Track;
use slipway_proxy::metrics::{PoolSample, WindowStats};
use slipway_runtime::Release;
use slipway_runtime::supervisor::SetStatus;
use slipway_spec::resolve::{ResolvedEnv, ResolvedService};

/// How one web service's traffic is split between releases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceTraffic {
    /// Public port on the proxy (0: one the proxy picks and keeps).
    pub port: u16,
    /// How long a removed pool's requests may take to finish, in milliseconds.
    pub drain_ms: u64,
    /// Pools, by release.
    pub pools: Vec<PlannedPool>,
    /// Cookie holding the sticky key.
    pub sticky_cookie: String,
    /// Header holding the sticky key (looked at first).
    pub sticky_header: Option<String>,
    /// Sticky keys always sent to the canary.
    pub canary_tenants: Vec<String>,
}

/// One release's share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedPool {
    /// Release id (`r3`).
    pub release: String,
    /// Its role.
    pub track: Track,
    /// Share of the traffic, 0–100.
    pub weight: f64,
}

impl ServiceTraffic {
    /// All traffic of `service` to one release.
    pub fn stable(release: &str, service: &ResolvedService) -> Self {
        ServiceTraffic {
            port: service.port.unwrap_or(0),
            drain_ms: u64::try_from(service.drain.std().as_millis()).unwrap_or(u64::MAX),
            pools: vec![PlannedPool {
                release: release.to_string(),
                track: Track::Stable,
                weight: 100.0,
            }],
            sticky_cookie: service.strategy.sticky_cookie.clone(),
            sticky_header: service.strategy.sticky_header.clone(),
            canary_tenants: Vec::new(),
        }
    }

    /// The share of `release`, 0 when it has no pool.
    pub fn weight_of(&self, release: &str) -> f64 {
        self.pools
            .iter()
            .filter(|p| p.release == release && p.track != Track::Preview)
            .map(|p| p.weight)
            .sum()
    }
}

/// Why the platform could not do something.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(pub String);

/// See the module docs.
#[async_trait]
pub trait Platform: Send + Sync + 'static {
    /// Makes the set of `service` at `release` exist with `replicas` instances (creating,
    /// building, adopting or scaling it).
    async fn ensure_set(
        &self,
        config: &ResolvedEnv,
        release: &Release,
        service: &str,
        replicas: u32,
    ) -> Result<(), PlatformError>;

    /// Marks slots `from..` of a set as retiring: running, but getting no new traffic.
    async fn retire_from(&self, environment: &str, service: &str, release: &str, from: u32);

    /// Removes a set; returns when its instances are gone.
    async fn remove_set(&self, environment: &str, service: &str, release: &str);

    /// The sets of an environment.
    async fn sets(&self, environment: &str) -> Vec<SetStatus>;

    /// Stops instances a previous control plane left that no ensured set claimed.
    async fn release_unclaimed(&self, environment: &str);

    /// The variables (and which of them are secret) an instance of `service` gets, for a
    /// one-shot command run the same way.
    fn command_environment(
        &self,
        config: &ResolvedEnv,
        release: &Release,
        service: &str,
    ) -> Result<(IndexMap<String, String>, Vec<String>), PlatformError>;

    /// Sets (or with `None` clears) a web service's traffic plan and returns once the proxy
    /// serves it.
    async fn set_traffic(
        &self,
        environment: &str,
        service: &str,
        plan: Option<ServiceTraffic>,
    ) -> Result<(), PlatformError>;

    /// Cumulative counts and requests in flight of every pool the proxy has.
    async fn samples(&self) -> Result<Vec<PoolSample>, PlatformError>;

    /// Windowed stats of every pool (for the pre-deploy baseline).
    async fn window_stats(
        &self,
        window: std::time::Duration,
    ) -> Result<Vec<(PoolKey, WindowStats)>, PlatformError>;

    /// Where the proxy serves a service's preview pool, if it does.
    async fn preview_address(&self, environment: &str, service: &str) -> Option<String>;

    /// Deletes a pruned release's build output.
    async fn prune(&self, environment: &str, release: &Release);

    /// Where the proxy serves a service.
    async fn public_address(&self, environment: &str, service: &str) -> Option<String>;

    /// The last lines a set's instances wrote (for a set that cannot start).
    async fn recent_output(
        &self,
        environment: &str,
        service: &str,
        release: &str,
        lines: usize,
    ) -> Vec<String>;
}

/// Which pool a stat is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolKey {
    /// Environment.
    pub environment: String,
    /// Service.
    pub service: String,
    /// Release.
    pub release: String,
    /// Track.
    pub track: Track,
}
