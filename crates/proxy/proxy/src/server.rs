//! The proxy itself: listeners from the route table, and the request path.
//!
//! A request finds its route by listener, host and path; maintenance modes and injected faults
//! come first; then a pool is chosen ([`crate::router`]), then a backend in it
//! ([`crate::pool`]); the request goes out on a pooled keep-alive connection with
//! `x-request-id`, `x-forwarded-*` and `traceparent` kept, and comes back with its metrics
//! recorded. Connection failures before anything was sent are retried once on another backend
//! of the same pool for idempotent requests without a body.
//!
//! A new table swaps in atomically ([`arc_swap`]); requests already going keep the pool they
//! chose, so a removed pool drains: nothing new reaches it, and what is in flight finishes
//! until its drain timeout, when upgraded connections (WebSocket) are closed too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fault::FaultState;
use crate::metrics::Metrics;
use crate::pool::PoolState;
use crate::router::RouteState;
use crate::table::{Mode, RouteTable, TableError, Track};

/// Any body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Bodies flowing through the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

const TRACK_HEADER: &str = "x-slipway-track";
const REQUEST_ID: &str = "x-request-id";
/// The table as last accepted, with `:0` ports resolved.
pub const TABLE_FILE: &str = "routes.json";

/// What a listener serves.
#[derive(Clone, Debug)]
struct Served {
    route: Arc<RouteState>,
    preview: bool,
}

/// The table, compiled for the request path.
#[derive(Debug, Default)]
struct Compiled {
    by_listener: HashMap<SocketAddr, Vec<Served>>,
}

struct ListenerHandle {
    stop: CancellationToken,
}

/// The data plane.
pub struct Proxy {
    dir: PathBuf,
    table: Mutex<RouteTable>,
    compiled: ArcSwap<Compiled>,
    /// One single-threaded runtime per core, each accepting on every listener and keeping its
    /// own backend connections: a request never hops threads (as nginx's workers).
    workers: Vec<tokio::runtime::Handle>,
    /// RED metrics.
    pub metrics: Metrics,
    pools: Mutex<HashMap<(String, String, String), Arc<PoolState>>>,
    /// Pools that left the table (or changed track) and still have requests going.
    draining: Mutex<Vec<(String, Arc<PoolState>)>>,
    faults: Mutex<HashMap<(String, String), Arc<FaultState>>>,
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, ListenerHandle>>,
    access_sample: f64,
    /// Serialises table changes.
    applying: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small JSON answer of the proxy's own.
fn own(status: StatusCode, error: &str, reason: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "reason": reason.into() }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-slipway-proxy", "1")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("a static response builds")
}

impl Proxy {
    /// A proxy keeping its table in `dir`. `access_sample` is the share (0–1) of requests
    /// written to the access log.
    pub fn new(dir: &Path, access_sample: f64) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = (0..cores)
            .map(|n| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("proxy-worker-{n}"))
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a single-threaded runtime builds");
                        let _ = tx.send(rt.handle().clone());
                        rt.block_on(std::future::pending::<()>());
                    })
                    .expect("a worker thread starts");
                rx.recv().expect("the worker sends its handle")
            })
            .collect();
        Arc::new(Proxy {
            dir: dir.to_path_buf(),
            table: Mutex::new(RouteTable::default()),
            compiled: ArcSwap::from_pointee(Compiled::default()),
            workers,
            metrics: Metrics::default(),
            pools: Mutex::new(HashMap::new()),
            draining: Mutex::new(Vec::new()),
            faults: Mutex::new(HashMap::new()),
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            access_sample,
            applying: tokio::sync::Mutex::new(()),
        })
    }

    /// The current table (addresses resolved).
    pub fn table(&self) -> RouteTable {
        lock(&self.table).clone()
    }

    /// Loads the table saved by the previous run, if any, and serves it.
    pub async fn restore(self: &Arc<Self>) -> Result<(), TableError> {
        let path = self.dir.join(TABLE_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(());
        };
        let table: RouteTable = serde_json::from_slice(&bytes)
            .map_err(|e| TableError::Invalid(format!("{} is unreadable: {e}", path.display())))?;
        tracing::info!(version = table.version, "serving the saved route table");
        self.apply(table).await.map(|_| ())
    }

    /// Replaces the table if `table.version` is newer; returns it with addresses resolved.
    pub async fn apply(self: &Arc<Self>, mut table: RouteTable) -> Result<RouteTable, TableError> {
        let _one_at_a_time = self.applying.lock().await;
        table.validate()?;
        let current = self.table();
        if table.version <= current.version && current.version != 0 {
            return Err(TableError::Stale {
                offered: table.version,
                current: current.version,
            });
        }
        // Listeners: `:0` keeps the port it was given before, for the same route.
        for route in &mut table.routes {
            let before = current
                .routes
                .iter()
                .find(|r| r.service == route.service && r.environment == route.environment);
            for (addr, old) in [
                (&mut route.listen, before.map(|b| b.listen.clone())),
                (
                    route.preview_listen.get_or_insert_default(),
                    before.and_then(|b| b.preview_listen.clone()),
                ),
            ] {
                if addr.ends_with(":0")
                    && let Some(old) = old
                    && old.rsplit_once(':').map(|(h, _)| h) == addr.rsplit_once(':').map(|(h, _)| h)
                {
                    *addr = old;
                }
            }
            if route.preview_listen.as_deref() == Some("") {
                route.preview_listen = None;
            }
        }
        let mut listeners = self.listeners.lock().await;
        let mut wanted: Vec<SocketAddr> = Vec::new();
        for route in &mut table.routes {
            for addr in std::iter::once(&mut route.listen).chain(route.preview_listen.as_mut()) {
                let parsed: SocketAddr = addr.parse().expect("validated");
                let bound = if let Some((bound, _)) = listeners.iter().find(|(b, _)| **b == parsed)
                {
                    *bound
                } else {
                    let listener = TcpListener::bind(parsed).await.map_err(|e| {
                        TableError::Invalid(format!(
                            "`{}`: cannot listen on {parsed}: {e}",
                            route.service
                        ))
                    })?;
                    let bound = listener.local_addr().map_err(|e| {
                        TableError::Invalid(format!("cannot read the bound address: {e}"))
                    })?;
                    let stop = CancellationToken::new();
                    let shared = listener.into_std().map_err(|e| {
                        TableError::Invalid(format!("cannot share the listener: {e}"))
                    })?;
                    for worker in &self.workers {
                        let own = shared.try_clone().map_err(|e| {
                            TableError::Invalid(format!("cannot share the listener: {e}"))
                        })?;
                        worker.spawn(self.clone().accept(own, bound, stop.clone()));
                    }
                    tracing::info!(addr = %bound, "listening");
                    listeners.insert(bound, ListenerHandle { stop });
                    bound
                };
                *addr = bound.to_string();
                wanted.push(bound);
            }
        }
        listeners.retain(|addr, handle| {
            let keep = wanted.contains(addr);
            if !keep {
                handle.stop.cancel();
            }
            keep
        });
        drop(listeners);

        // Pools: kept while their release stays; removed ones drain.
        let mut compiled = Compiled::default();
        let mut live = Vec::new();
        let mut retire: Vec<((String, String, String), Arc<PoolState>)> = Vec::new();
        {
            let mut pools = lock(&self.pools);
            for route in &table.routes {
                let mut states = Vec::new();
                for p in &route.pools {
                    let key = (
                        route.environment.clone(),
                        route.service.clone(),
                        p.release.clone(),
                    );
                    let existing = pools.get(&key).cloned();
                    let state = match existing {
                        Some(s) if s.track == p.track => s,
                        other => {
                            if let Some(old) = other {
                                // A release changing track starts afresh (new metric labels);
                                // the old state drains like a removed pool.
                                retire.push((key.clone(), old));
                            }
                            let fresh = self.new_pool(route, p);
                            pools.insert(key.clone(), fresh.clone());
                            fresh
                        }
                    };
                    state.set_backends(&p.backends);
                    live.push(key);
                    states.push((state, p.weight));
                }
                let fault = lock(&self.faults)
                    .entry((route.environment.clone(), route.service.clone()))
                    .or_default()
                    .clone();
                let state = Arc::new(RouteState::new(route.clone(), states, fault));
                let listen: SocketAddr = route.listen.parse().expect("resolved");
                compiled
                    .by_listener
                    .entry(listen)
                    .or_default()
                    .push(Served {
                        route: state.clone(),
                        preview: false,
                    });
                if let Some(preview) = &route.preview_listen {
                    let preview: SocketAddr = preview.parse().expect("resolved");
                    compiled
                        .by_listener
                        .entry(preview)
                        .or_default()
                        .push(Served {
                            route: state,
                            preview: true,
                        });
                }
            }
            let drain_ms: HashMap<(String, String), u64> = table
                .routes
                .iter()
                .map(|r| ((r.environment.clone(), r.service.clone()), r.drain_ms))
                .collect();
            pools.retain(|key, state| {
                let keep = live.contains(key);
                if !keep {
                    retire.push((key.clone(), state.clone()));
                }
                keep
            });
            let mut draining = lock(&self.draining);
            draining.retain(|(_, p)| !p.drain.is_cancelled() && p.going() > 0);
            for (key, state) in retire {
                let drain = Duration::from_millis(
                    drain_ms
                        .get(&(key.0.clone(), key.1.clone()))
                        .copied()
                        .unwrap_or(30_000),
                );
                let token = state.drain.clone();
                tracing::info!(release = %key.2, service = %key.1, "draining for {drain:?}");
                tokio::spawn(async move {
                    tokio::time::sleep(drain).await;
                    token.cancel();
                });
                draining.push((key.0.clone(), state));
            }
        }
        for served in compiled.by_listener.values_mut() {
            served.sort_by_key(|s| std::cmp::Reverse(s.route.specificity()));
        }
        self.compiled.store(Arc::new(compiled));
        *lock(&self.table) = table.clone();
        if let Err(e) = save(&self.dir.join(TABLE_FILE), &table) {
            tracing::error!(error = %e, "cannot save the route table");
        }
        tracing::info!(version = table.version, "route table applied");
        Ok(table)
    }

    fn new_pool(&self, route: &crate::table::Route, p: &crate::table::Pool) -> Arc<PoolState> {
        Arc::new(PoolState::new(
            &route.service,
            &p.release,
            p.track,
            &p.backends,
            self.metrics.pool(
                &route.environment,
                &route.service,
                &p.release,
                p.track.as_str(),
            ),
        ))
    }

    /// Switches a route's fault on or off; `false` if there is no such route.
    pub fn set_fault(
        &self,
        environment: &str,
        service: &str,
        fault: Option<crate::fault::Fault>,
    ) -> bool {
        let known = lock(&self.table)
            .routes
            .iter()
            .any(|r| r.service == service && r.environment == environment);
        if known {
            lock(&self.faults)
                .entry((environment.to_string(), service.to_string()))
                .or_default()
                .set(fault);
        }
        known
    }

    /// Windowed stats of every pool that is in the table.
    pub fn stats(&self, window: Duration) -> Vec<serde_json::Value> {
        let pools = lock(&self.pools);
        let mut out: Vec<serde_json::Value> = pools
            .iter()
            .map(|((env, service, release), p)| {
                let mut v = serde_json::to_value(p.metrics.stats(window)).unwrap_or_default();
                v["environment"] = env.clone().into();
                v["service"] = service.clone().into();
                v["release"] = release.clone().into();
                v["track"] = p.track.as_str().into();
                v
            })
            .collect();
        out.sort_by_key(|v| v.to_string());
        out
    }

    /// Cumulative counts and requests in flight of every pool, draining ones included.
    pub fn samples(&self) -> Vec<crate::metrics::PoolSample> {
        let sample =
            |environment: &str, p: &PoolState, draining: bool| crate::metrics::PoolSample {
                environment: environment.to_string(),
                service: p.service.clone(),
                release: p.release.clone(),
                track: p.track,
                draining,
                in_flight: p.metrics.in_flight.get(),
                backends_in_flight: p.in_flight_by_backend(),
                counts: p.metrics.counts(),
            };
        let mut out: Vec<crate::metrics::PoolSample> = lock(&self.pools)
            .iter()
            .map(|((env, _, _), p)| sample(env, p, false))
            .collect();
        let mut draining = lock(&self.draining);
        draining.retain(|(_, p)| !p.drain.is_cancelled() && p.going() > 0);
        out.extend(draining.iter().map(|(env, p)| sample(env, p, true)));
        out.sort_by(|a, b| {
            (&a.environment, &a.service, &a.release, a.track, a.draining).cmp(&(
                &b.environment,
                &b.service,
                &b.release,
                b.track,
                b.draining,
            ))
        });
        out
    }

    async fn accept(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        addr: SocketAddr,
        stop: CancellationToken,
    ) {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot accept on this worker");
                return;
            }
        };
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| proxy.clone().handle(req, addr, peer));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        tracing::debug!(%addr, "stopped listening");
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        listener: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let compiled = self.compiled.load();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(str::to_string);
        let Some(served) = compiled.by_listener.get(&listener).and_then(|all| {
            all.iter()
                .find(|s| s.route.matches(host.as_deref(), req.uri().path()))
                .cloned()
        }) else {
            return Ok(own(
                StatusCode::NOT_FOUND,
                "no route",
                "no service is routed for this host and path",
            ));
        };
        drop(compiled);
        let route = served.route.clone();
        match &route.route.mode {
            Mode::Serve => {}
            Mode::Stop { message } => {
                return Ok(own(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stopped",
                    message.clone(),
                ));
            }
            Mode::Pause { timeout_ms } => {
                if !self.wait_unpaused(&route, listener, *timeout_ms).await {
                    return Ok(own(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "paused",
                        "the service is paused for maintenance; retry shortly",
                    ));
                }
            }
        }
        let header_track = req
            .headers()
            .get(TRACK_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Track::parse);
        let sticky = sticky_key(&route, &req);
        let Some(pool) = route
            .choose(
                served.preview,
                header_track,
                sticky.as_deref(),
                fastrand::f64(),
            )
            .cloned()
        else {
            return Ok(own(
                StatusCode::SERVICE_UNAVAILABLE,
                "no release",
                "no release of this service is receiving traffic",
            ));
        };
        let in_flight = InFlight::new(&pool.metrics.in_flight);
        let response = self.forward(&route, &pool, req, peer).await;
        drop(in_flight);
        pool.metrics
            .record(response.status().as_u16(), started.elapsed());
        if self.access_sample > 0.0 && fastrand::f64() < self.access_sample {
            println!(
                "{}",
                serde_json::json!({
                    "level": "info", "msg": "access",
                    "service": route.route.service, "release": pool.release,
                    "track": pool.track.as_str(), "status": response.status().as_u16(),
                    "ms": started.elapsed().as_secs_f64() * 1000.0,
                    "request_id": response.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()),
                })
            );
        }
        Ok(response)
    }

    async fn wait_unpaused(
        &self,
        route: &Arc<RouteState>,
        listener: SocketAddr,
        timeout_ms: u64,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let compiled = self.compiled.load();
            let now = compiled.by_listener.get(&listener).and_then(|all| {
                all.iter()
                    .find(|s| s.route.route.service == route.route.service)
                    .map(|s| s.route.route.mode.clone())
            });
            if now != Some(Mode::Pause { timeout_ms }) {
                return now == Some(Mode::Serve);
            }
        }
        false
    }

    async fn forward(
        &self,
        route: &RouteState,
        pool: &Arc<PoolState>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        if let Some(injected) = route.fault.draw() {
            if let Some(delay) = injected.delay {
                tokio::time::sleep(delay).await;
            }
            if let Some(status) = injected.abort {
                return own(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "fault injected",
                    "this request was aborted by a fault injected on the route",
                );
            }
        }
        let max_body = route.route.max_body_bytes;
        if req
            .body()
            .size_hint()
            .exact()
            .or(req.body().size_hint().upper())
            .is_some_and(|n| n > max_body)
        {
            return own(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
                format!("request bodies are limited to {max_body} bytes"),
            );
        }
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.headers.contains_key(header::UPGRADE);
        let on_client_upgrade = if upgrade {
            let mut shell = Request::from_parts(parts, ());
            let on = hyper::upgrade::on(&mut shell);
            parts = shell.into_parts().0;
            Some(on)
        } else {
            None
        };
        prepare_headers(&mut parts.headers, peer, upgrade);
        let empty_body = body.is_end_stream();
        let retryable = empty_body
            && matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
        let request_id = parts.headers.get(REQUEST_ID).cloned();
        let body: Body = if empty_body {
            http_body_util::Empty::new().map_err(|e| match e {}).boxed()
        } else {
            Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
                .map_err(|e| -> BoxError { e })
                .boxed()
        };
        let upstreams = pool.upstreams();
        let timeout = Duration::from_millis(route.route.timeout_ms);
        let mut body = Some(body);
        let mut avoid: Option<String> = None;
        for attempt in 0..2 {
            let Some(lease) = pool.pick(&upstreams, avoid.as_deref()) else {
                return own(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no backend",
                    format!("release {} has no ready instance", pool.release),
                );
            };
            let upstream = lease.upstream;
            // Origin-form on the wire (`GET /path?q HTTP/1.1`), with a Host header.
            let uri = parts.uri.path_and_query().map_or_else(
                || hyper::Uri::from_static("/"),
                |pq| hyper::Uri::from(pq.clone()),
            );
            if !parts.headers.contains_key(header::HOST)
                && let Ok(host) = HeaderValue::from_str(upstream.authority.as_str())
            {
                parts.headers.insert(header::HOST, host);
            }
            let mut out = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(hyper::Version::HTTP_11)
                .body(body.take().unwrap_or_else(|| {
                    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
                }))
                .expect("a valid request from valid parts");
            *out.headers_mut() = if retryable && attempt == 0 {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let sent = tokio::select! {
                r = tokio::time::timeout(timeout, crate::upstream::send(&upstream.authority, out)) => r,
                _ = pool.drain.cancelled() => {
                    return own(StatusCode::SERVICE_UNAVAILABLE, "drained", "the release was removed and its drain time is over");
                }
            };
            match sent {
                Err(_) => {
                    upstream.record(false);
                    return own(
                        StatusCode::GATEWAY_TIMEOUT,
                        "backend timeout",
                        format!(
                            "instance {} did not answer within {}ms",
                            upstream.backend.id, route.route.timeout_ms
                        ),
                    );
                }
                Ok(Err(e)) => {
                    upstream.record(false);
                    if e.nothing_sent() && retryable && attempt == 0 {
                        avoid = Some(upstream.backend.id.clone());
                        continue;
                    }
                    return own(
                        StatusCode::BAD_GATEWAY,
                        "backend error",
                        format!("instance {}: {e}", upstream.backend.id),
                    );
                }
                Ok(Ok(mut response)) => {
                    upstream.record(!response.status().is_server_error());
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_side) = on_client_upgrade
                    {
                        let backend_side = hyper::upgrade::on(&mut response);
                        let drain = pool.drain.clone();
                        tokio::spawn(async move {
                            let (Ok(client), Ok(backend)) = (client_side.await, backend_side.await)
                            else {
                                return;
                            };
                            let mut client = TokioIo::new(client);
                            let mut backend = TokioIo::new(backend);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                                _ = drain.cancelled() => {}
                            }
                        });
                    }
                    let (mut rparts, rbody) = response.into_parts();
                    if let Some(id) = request_id {
                        rparts.headers.insert(REQUEST_ID, id);
                    }
                    return Response::from_parts(
                        rparts,
                        rbody.map_err(|e| -> BoxError { Box::new(e) }).boxed(),
                    );
                }
            }
        }
        own(
            StatusCode::BAD_GATEWAY,
            "backend error",
            "no instance could be reached",
        )
    }
}

/// Counts a request in flight until dropped: also when the client goes away mid-request and
/// the request's future is dropped, which a decrement after the `await` would miss.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The request's sticky key: the configured header, else the configured cookie.
fn sticky_key(route: &RouteState, req: &Request<Incoming>) -> Option<String> {
    let sticky = &route.route.sticky;
    if let Some(name) = &sticky.header
        && let Some(v) = req
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        return Some(v.to_string());
    }
    let name = sticky.cookie.as_deref()?;
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Hop-by-hop headers go; `x-request-id` and `x-forwarded-*` are added.
fn prepare_headers(headers: &mut hyper::HeaderMap, peer: SocketAddr, upgrade: bool) {
    let named_in_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named_in_connection {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    if !headers.contains_key(REQUEST_ID) {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        headers.insert(
            REQUEST_ID,
            HeaderValue::from_str(&id).expect("hex is a valid header"),
        );
    }
    let ip = peer.ip().to_string();
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", v);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
}

fn save(path: &Path, table: &RouteTable) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
