//! The route table: what the control plane tells the proxy, replaced as a whole and
//! atomically, by version (a table whose version is not newer than the current one is refused).
//!
//! Per service: a listener (address, optionally a host and a path prefix), an optional preview
//! listener (blue-green), how requests stick to a release, and per release a pool of backends
//! with a track and a weight.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The whole table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Strictly increasing.
    pub version: u64,
    /// Routes, one per service.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One service's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Environment (metric label).
    #[serde(default)]
    pub environment: String,
    /// Service name (metric label).
    pub service: String,
    /// Listen address, e.g. `127.0.0.1:8180` (`:0` picks a port; the table is saved with it).
    pub listen: String,
    /// Only requests for this host (none: any).
    #[serde(default)]
    pub host: Option<String>,
    /// Only paths under this prefix (none: all).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// A second listener that sends every request to the `preview` pool (blue-green).
    #[serde(default)]
    pub preview_listen: Option<String>,
    /// Stickiness: requests with the same key land on the same release.
    #[serde(default)]
    pub sticky: Sticky,
    /// Tenants (sticky keys) always sent to the canary pool.
    #[serde(default)]
    pub canary_tenants: Vec<String>,
    /// How long a removed pool's in-flight requests may take (milliseconds).
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Serving, holding requests, or refusing them.
    #[serde(default)]
    pub mode: Mode,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Time allowed for a backend's response headers (milliseconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Release pools.
    pub pools: Vec<Pool>,
}

fn default_drain_ms() -> u64 {
    30_000
}
fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    60_000
}

/// Where the sticky key comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sticky {
    /// Cookie name.
    pub cookie: Option<String>,
    /// Header name (a tenant id, say); looked at before the cookie.
    pub header: Option<String>,
}

impl Default for Sticky {
    fn default() -> Self {
        Sticky {
            cookie: Some("slipway_sticky".into()),
            header: None,
        }
    }
}

/// Maintenance mode of a route, as kamal-proxy has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Mode {
    /// Normal.
    #[default]
    Serve,
    /// Hold new requests (up to `timeout_ms`) until the mode changes back.
    Pause {
        /// Longest hold before a 503.
        timeout_ms: u64,
    },
    /// Answer 503 with a message.
    Stop {
        /// Shown to clients.
        message: String,
    },
}

/// One release's backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Release id.
    pub release: String,
    /// `stable`, `canary` or `preview`.
    pub track: Track,
    /// Share of the traffic, 0–100 (pools of a route are normalised by their sum).
    pub weight: f64,
    /// Ready instances.
    pub backends: Vec<Backend>,
}

/// A pool's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// The release in production.
    Stable,
    /// The release being tried on part of the traffic.
    Canary,
    /// The release reachable only by header or preview listener.
    Preview,
}

impl Track {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
            Track::Preview => "preview",
        }
    }

    /// Parses `x-slipway-track`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stable" => Some(Track::Stable),
            "canary" => Some(Track::Canary),
            "preview" => Some(Track::Preview),
            _ => None,
        }
    }
}

/// One instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Instance id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
}

/// Why a table was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    /// Not newer than the current table.
    #[error("version {offered} is not newer than the current version {current}")]
    Stale {
        /// Offered.
        offered: u64,
        /// Current.
        current: u64,
    },
    /// Something in it is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl RouteTable {
    /// Checks the table on its own.
    pub fn validate(&self) -> Result<(), TableError> {
        let mut names = BTreeSet::new();
        for r in &self.routes {
            if !names.insert((&r.environment, &r.service)) {
                return Err(TableError::Invalid(format!(
                    "service `{}` has two routes in environment `{}`",
                    r.service, r.environment
                )));
            }
            check_addr(&r.listen, &r.service)?;
            if let Some(p) = &r.preview_listen {
                check_addr(p, &r.service)?;
            }
            if let Some(prefix) = &r.path_prefix
                && !prefix.starts_with('/')
            {
                return Err(TableError::Invalid(format!(
                    "`{}`: path_prefix `{prefix}` must start with /",
                    r.service
                )));
            }
            let mut tracks = BTreeSet::new();
            for p in &r.pools {
                if !(0.0..=100.0).contains(&p.weight) || p.weight.is_nan() {
                    return Err(TableError::Invalid(format!(
                        "`{}` release `{}`: weight {} is not within 0–100",
                        r.service, p.release, p.weight
                    )));
                }
                if !tracks.insert(p.track) {
                    return Err(TableError::Invalid(format!(
                        "`{}` has two {} pools",
                        r.service,
                        p.track.as_str()
                    )));
                }
                for b in &p.backends {
                    check_addr(&b.addr, &r.service)?;
                }
            }
        }
        Ok(())
    }
}

fn check_addr(addr: &str, service: &str) -> Result<(), TableError> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| {
            TableError::Invalid(format!(
                "`{service}`: `{addr}` is not an address and port (write 127.0.0.1:8080)"
            ))
        })
}
