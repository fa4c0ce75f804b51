//! Which pool a request goes to.
//!
//! In order: the preview listener sends everything to the preview pool; the
//! `x-slipway-track` header picks a track (smoke tests before a release gets traffic); a
//! sticky key on the canary allow-list goes to the canary; otherwise the weights decide, by a
//! hash of the sticky key when there is one, else at random.
//!
//! The weighted split lays stable and canary on a line of length 100 with the canary at the
//! top. A key's place on the line never changes, so as the canary's weight grows only keys
//! moving into its range switch, and never back: a user who saw the canary keeps it, and a
//! user on stable stays there until the canary reaches them (flagger#1532 let sessions drift
//! both ways).

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::fault::FaultState;
use crate::pool::PoolState;
use crate::table::{Route, Track};

/// A route at run time.
#[derive(Debug)]
pub struct RouteState {
    /// From the table.
    pub route: Route,
    /// Pools with their weights, stable first.
    pub pools: Vec<(Arc<PoolState>, f64)>,
    canary_tenants: HashSet<String>,
    /// Fault injection.
    pub fault: Arc<FaultState>,
}

/// A point on the line `[0, 1)` for a key, the same on every proxy and every restart.
pub fn key_point(key: &str) -> f64 {
    let digest = Sha256::digest(key.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

impl RouteState {
    /// A route with its pools.
    pub fn new(route: Route, pools: Vec<(Arc<PoolState>, f64)>, fault: Arc<FaultState>) -> Self {
        let mut pools = pools;
        pools.sort_by_key(|(p, _)| p.track);
        RouteState {
            canary_tenants: route.canary_tenants.iter().cloned().collect(),
            route,
            pools,
            fault,
        }
    }

    fn track(&self, track: Track) -> Option<&Arc<PoolState>> {
        self.pools
            .iter()
            .find(|(p, _)| p.track == track)
            .map(|(p, _)| p)
    }

    /// Chooses a pool. `point` is where a request without a sticky key lands (random).
    pub fn choose(
        &self,
        preview_listener: bool,
        header_track: Option<Track>,
        sticky_key: Option<&str>,
        point: f64,
    ) -> Option<&Arc<PoolState>> {
        if preview_listener {
            return self.track(Track::Preview);
        }
        if let Some(track) = header_track {
            return self.track(track);
        }
        if let Some(key) = sticky_key
            && self.canary_tenants.contains(key)
            && let Some(canary) = self.track(Track::Canary)
        {
            return Some(canary);
        }
        let stable = self.pools.iter().find(|(p, _)| p.track == Track::Stable);
        let canary = self.pools.iter().find(|(p, _)| p.track == Track::Canary);
        match (stable, canary) {
            (Some((s, ws)), Some((c, wc))) => {
                let total = ws + wc;
                if total <= 0.0 {
                    return Some(s);
                }
                let at = sticky_key.map_or(point, key_point) * total;
                Some(if at >= total - wc { c } else { s })
            }
            (Some((s, _)), None) => Some(s),
            (None, Some((c, _))) => Some(c),
            (None, None) => None,
        }
    }

    /// Whether a request for `host` and `path` is this route's.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.route.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => {
                let got = got.split(':').next().unwrap_or(got);
                want.eq_ignore_ascii_case(got)
            }
            (Some(_), None) => false,
        };
        let path_ok = self
            .route
            .path_prefix
            .as_deref()
            .is_none_or(|p| path.starts_with(p));
        host_ok && path_ok
    }

    /// How specific the match is (longer prefixes and named hosts first).
    pub fn specificity(&self) -> (bool, usize) {
        (
            self.route.host.is_some(),
            self.route.path_prefix.as_deref().map_or(0, str::len),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Mode, Sticky};

    fn pool(release: &str, track: Track) -> Arc<PoolState> {
        let metrics = crate::metrics::Metrics::default();
        Arc::new(PoolState::new(
            "web",
            release,
            track,
            &[],
            metrics.pool("", "web", release, track.as_str()),
        ))
    }

    fn route(canary_weight: f64) -> RouteState {
        let r = Route {
            environment: String::new(),
            service: "web".into(),
            listen: "127.0.0.1:0".into(),
            host: None,
            path_prefix: None,
            preview_listen: None,
            sticky: Sticky::default(),
            canary_tenants: vec!["acme".into()],
            drain_ms: 1000,
            mode: Mode::Serve,
            max_body_bytes: 1,
            timeout_ms: 1,
            pools: Vec::new(),
        };
        RouteState::new(
            r,
            vec![
                (pool("r1", Track::Stable), 100.0 - canary_weight),
                (pool("r2", Track::Canary), canary_weight),
                (pool("r3", Track::Preview), 0.0),
            ],
            Arc::default(),
        )
    }

    #[test]
    fn a_key_only_ever_moves_from_stable_to_canary_as_the_canary_grows() {
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let mut on_canary: HashSet<&str> = HashSet::new();
        for w in [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0] {
            let r = route(w);
            let now: HashSet<&str> = keys
                .iter()
                .filter(|k| r.choose(false, None, Some(k), 0.0).unwrap().release == "r2")
                .map(String::as_str)
                .collect();
            assert!(
                on_canary.is_subset(&now),
                "a canary user went back to stable at {w}%"
            );
            let share = now.len() as f64 / keys.len() as f64 * 100.0;
            assert!((share - w).abs() < 4.0, "{share}% on canary at {w}%");
            on_canary = now;
        }
    }

    #[test]
    fn overrides_come_first() {
        let r = route(0.0);
        assert_eq!(r.choose(true, None, None, 0.0).unwrap().release, "r3");
        assert_eq!(
            r.choose(false, Some(Track::Canary), None, 0.0)
                .unwrap()
                .release,
            "r2"
        );
        assert_eq!(
            r.choose(false, None, Some("acme"), 0.0).unwrap().release,
            "r2"
        );
        assert_eq!(
            r.choose(false, None, Some("other"), 0.99).unwrap().release,
            "r1"
        );
    }
}
