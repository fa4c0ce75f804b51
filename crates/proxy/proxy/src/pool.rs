//! A release's backends at run time: outstanding requests per backend, least-outstanding
//! selection by the power of two random choices, and passive outlier ejection.
//!
//! A pool outlives table versions while its service keeps the release, so its counters and
//! ejections carry over; a pool that leaves the table drains: no new requests, and its
//! `drain` token fires when the drain timeout is over (cutting what is still going).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::PoolMetrics;
use crate::table::{Backend, Track};

/// Consecutive failures that eject a backend.
const EJECT_AFTER: u32 = 5;
/// How long an ejection lasts.
const EJECT_FOR: Duration = Duration::from_secs(10);

/// One backend at run time.
#[derive(Debug)]
pub struct Upstream {
    /// From the table.
    pub backend: Backend,
    /// Parsed address, for the URI.
    pub authority: hyper::http::uri::Authority,
    outstanding: AtomicU32,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Upstream {
    fn new(backend: Backend) -> Option<Self> {
        let authority = backend.addr.parse().ok()?;
        Some(Upstream {
            backend,
            authority,
            outstanding: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
        })
    }

    fn ejected(&self, now: Instant) -> bool {
        let mut until = self.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(t) if t > now => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Counts the outcome of a request: a connect error or 5xx is a failure.
    pub fn record(&self, ok: bool) {
        if ok {
            // Read first: an unconditional store would bounce the cache line between worker
            // threads on every request.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER {
            self.failures.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + EJECT_FOR);
            tracing::warn!(backend = %self.backend.id, "ejected after {n} consecutive failures");
        }
    }
}

/// Holds a backend's outstanding count while a request uses it.
pub struct Lease<'a> {
    /// The backend.
    pub upstream: &'a Upstream,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.upstream.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A release's pool at run time.
#[derive(Debug)]
pub struct PoolState {
    /// Service.
    pub service: String,
    /// Release id.
    pub release: String,
    /// Track.
    pub track: Track,
    upstreams: arc_swap::ArcSwap<Vec<Upstream>>,
    /// Backend lists replaced by newer ones, kept while requests they handed out are going,
    /// so [`in_flight_by_backend`](Self::in_flight_by_backend) sees removed backends drain.
    retired: Mutex<Vec<std::sync::Arc<Vec<Upstream>>>>,
    next: AtomicU64,
    /// Fires when a removed pool's drain time is over.
    pub drain: CancellationToken,
    /// Its RED metrics.
    pub metrics: PoolMetrics,
}

impl PoolState {
    /// A pool with these backends.
    pub fn new(
        service: &str,
        release: &str,
        track: Track,
        backends: &[Backend],
        metrics: PoolMetrics,
    ) -> Self {
        PoolState {
            metrics,
            service: service.to_string(),
            release: release.to_string(),
            track,
            upstreams: arc_swap::ArcSwap::from_pointee(
                backends.iter().cloned().filter_map(Upstream::new).collect(),
            ),
            retired: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            drain: CancellationToken::new(),
        }
    }

    /// Requests going on to any of its backends (its in-flight gauge is shared with every pool
    /// of the same labels; these counts are its own).
    pub fn going(&self) -> u64 {
        self.in_flight_by_backend()
            .iter()
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// Requests going on per backend id, removed backends included (until they finish).
    pub fn in_flight_by_backend(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = Vec::new();
        let mut add = |u: &Upstream| {
            let n = u.outstanding.load(Ordering::Relaxed);
            match out.iter_mut().find(|(id, _)| *id == u.backend.id) {
                Some((_, sum)) => *sum += n,
                None => out.push((u.backend.id.clone(), n)),
            }
        };
        for u in self.upstreams.load().iter() {
            add(u);
        }
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|list| {
            list.iter()
                .any(|u| u.outstanding.load(Ordering::Relaxed) > 0)
        });
        for list in retired.iter() {
            for u in list.iter() {
                add(u);
            }
        }
        out.sort();
        out
    }

    /// Replaces the backends, keeping the state of those that stay.
    pub fn set_backends(&self, backends: &[Backend]) {
        let current = self.upstreams.load();
        let same = current.len() == backends.len()
            && current.iter().zip(backends).all(|(u, b)| &u.backend == b);
        if same {
            return;
        }
        let fresh: Vec<Upstream> = backends.iter().cloned().filter_map(Upstream::new).collect();
        for u in &fresh {
            if let Some(old) = current.iter().find(|o| o.backend == u.backend) {
                u.failures
                    .store(old.failures.load(Ordering::Relaxed), Ordering::Relaxed);
                *u.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    *old.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
        let old = self.upstreams.swap(std::sync::Arc::new(fresh));
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|list| {
            list.iter()
                .any(|u| u.outstanding.load(Ordering::Relaxed) > 0)
        });
        retired.push(old);
    }

    /// The backends now.
    pub fn upstreams(&self) -> arc_swap::Guard<std::sync::Arc<Vec<Upstream>>> {
        self.upstreams.load()
    }

    /// Picks a backend: of two random ones not ejected (and not `avoid`), the one with fewer
    /// outstanding requests. When every backend is ejected, ejection is ignored (better a
    /// likely failure than a certain one).
    pub fn pick<'a>(&self, upstreams: &'a [Upstream], avoid: Option<&str>) -> Option<Lease<'a>> {
        let now = Instant::now();
        let usable = |u: &Upstream, strict: bool| {
            Some(u.backend.id.as_str()) != avoid && !(strict && u.ejected(now))
        };
        let chosen = match upstreams.len() {
            0 => return None,
            1 => upstreams.first().filter(|u| usable(u, false))?,
            n => {
                // Two random draws among usable backends (no allocation on this path).
                let draw = |strict: bool| -> Option<&'a Upstream> {
                    let start = fastrand::usize(..n);
                    (0..n)
                        .map(|k| &upstreams[(start + k) % n])
                        .find(|u| usable(u, strict))
                };
                let a = draw(true).or_else(|| draw(false))?;
                let b = draw(true).or_else(|| draw(false)).unwrap_or(a);
                let b = if std::ptr::eq(a, b) {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % n;
                    let c = &upstreams[i];
                    if usable(c, true) { c } else { b }
                } else {
                    b
                };
                if b.outstanding.load(Ordering::Relaxed) < a.outstanding.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
            }
        };
        chosen.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Lease { upstream: chosen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                id: format!("b{i}"),
                addr: format!("127.0.0.1:{}", 1000 + i),
            })
            .collect()
    }

    #[test]
    fn least_outstanding_wins_and_ejected_backends_are_skipped() {
        let metrics = crate::metrics::Metrics::default();
        let pool = PoolState::new(
            "web",
            "r1",
            Track::Stable,
            &backends(2),
            metrics.pool("", "web", "r1", "stable"),
        );
        let ups = pool.upstreams();
        let held: Vec<Lease> = (0..10).map(|_| pool.pick(&ups, None).unwrap()).collect();
        let on_b0 = held
            .iter()
            .filter(|l| l.upstream.backend.id == "b0")
            .count();
        assert!((4..=6).contains(&on_b0), "balanced: {on_b0} of 10 on b0");
        drop(held);
        for _ in 0..EJECT_AFTER {
            ups[0].record(false);
        }
        for _ in 0..50 {
            assert_eq!(pool.pick(&ups, None).unwrap().upstream.backend.id, "b1");
        }
        assert_eq!(
            pool.pick(&ups, Some("b1")).unwrap().upstream.backend.id,
            "b0",
            "all ejected or avoided: ejection is ignored"
        );
    }

    #[test]
    fn a_removed_backend_reports_its_requests_until_they_finish() {
        let metrics = crate::metrics::Metrics::default();
        let pool = PoolState::new(
            "web",
            "r1",
            Track::Stable,
            &backends(1),
            metrics.pool("", "web", "r1", "stable"),
        );
        let ups = pool.upstreams();
        let lease = pool.pick(&ups, None).unwrap();
        pool.set_backends(&backends(2)[1..]);
        assert_eq!(
            pool.in_flight_by_backend(),
            vec![("b0".to_string(), 1), ("b1".to_string(), 0)]
        );
        drop(lease);
        assert_eq!(pool.in_flight_by_backend(), vec![("b1".to_string(), 0)]);
    }
}
