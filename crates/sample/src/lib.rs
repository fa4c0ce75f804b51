//! The sample app (`slipway-sample`): the stand-in for users' services.
//!
//! `slipway-sample web` serves `/`, `/health`, `/health/detailed` and `/work?ms=N` on
//! `127.0.0.1:$PORT`; `slipway-sample worker` runs jobs in a loop and finishes the current one
//! on SIGTERM; `slipway-sample job` runs one job and exits. Knobs come from the environment (see
//! [`Knobs`]); the product brief lists them. The web server is built straight on hyper with
//! responses prepared at start, because it is the backend of the proxy benchmarks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The knobs, read from the environment once at start.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// `SAMPLE_VERSION`: label in the `x-sample-version` header and in `/` (default `v1`).
    pub version: String,
    /// `SAMPLE_FAIL_RATE`: share (0–1) of `/` and `/work` requests (and jobs) that fail.
    pub fail_rate: f64,
    /// `SAMPLE_LATENCY_MS`: delay added to every `/` and `/work` request.
    pub latency: Duration,
    /// `SAMPLE_STARTUP_MS`: delay before listening (or before the first job).
    pub startup: Duration,
    /// `SAMPLE_UNHEALTHY=1`: `/health` answers 503.
    pub unhealthy: bool,
    /// `SAMPLE_ECHO`: comma-separated variable names whose values `/` reports.
    pub echo: Vec<String>,
    /// `SAMPLE_PRINT`: comma-separated variable names whose values are logged at start.
    pub print: Vec<String>,
    /// `SAMPLE_CRASH_AFTER_MS`: exit with status 1 after this long.
    pub crash_after: Option<Duration>,
    /// `SAMPLE_IGNORE_SIGTERM=1`: keep going on SIGTERM (to test SIGKILL after the grace).
    pub ignore_sigterm: bool,
    /// `SAMPLE_JOB_MS`: length of one job (default 500).
    pub job: Duration,
    /// `SLIPWAY_HEARTBEAT_FILE` or `SAMPLE_HEARTBEAT_FILE`: touched after every job.
    pub heartbeat: Option<String>,
    /// `SAMPLE_EXIT_CODE`: exit status of `job` mode (default 0).
    pub exit_code: u8,
    /// `PORT`: where web mode listens (default 8000).
    pub port: u16,
}

impl Knobs {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let ms = |k: &str| {
            var(k)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let list = |k: &str| {
            var(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        Knobs {
            version: var("SAMPLE_VERSION").unwrap_or_else(|| "v1".into()),
            fail_rate: var("SAMPLE_FAIL_RATE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            latency: ms("SAMPLE_LATENCY_MS").unwrap_or_default(),
            startup: ms("SAMPLE_STARTUP_MS").unwrap_or_default(),
            unhealthy: var("SAMPLE_UNHEALTHY").is_some_and(|v| v == "1" || v == "true"),
            echo: list("SAMPLE_ECHO"),
            print: list("SAMPLE_PRINT"),
            crash_after: ms("SAMPLE_CRASH_AFTER_MS"),
            ignore_sigterm: var("SAMPLE_IGNORE_SIGTERM").is_some_and(|v| v == "1" || v == "true"),
            job: ms("SAMPLE_JOB_MS").unwrap_or(Duration::from_millis(500)),
            heartbeat: var("SLIPWAY_HEARTBEAT_FILE").or_else(|| var("SAMPLE_HEARTBEAT_FILE")),
            exit_code: var("SAMPLE_EXIT_CODE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            port: var("PORT").and_then(|v| v.parse().ok()).unwrap_or(8000),
        }
    }
}

/// Writes one JSON log line to stdout.
fn log(level: &str, message: &str, fields: serde_json::Value) {
    let mut line = json!({ "level": level, "message": message });
    if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    println!("{line}");
}

const USAGE: &str = "usage: slipway-sample web|worker|job\n\
  web     serve /, /health, /health/detailed and /work?ms=N on 127.0.0.1:$PORT\n\
  worker  run jobs in a loop; finish the current one on SIGTERM\n\
  job     run one job and exit\n\
knobs: SAMPLE_VERSION SAMPLE_FAIL_RATE SAMPLE_LATENCY_MS SAMPLE_STARTUP_MS SAMPLE_UNHEALTHY\n\
       SAMPLE_ECHO SAMPLE_PRINT SAMPLE_CRASH_AFTER_MS SAMPLE_IGNORE_SIGTERM SAMPLE_JOB_MS\n\
       SAMPLE_HEARTBEAT_FILE SAMPLE_EXIT_CODE PORT";

/// The program: dispatches on the first argument.
pub fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if !matches!(mode.as_str(), "web" | "worker" | "job") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let knobs = Knobs::from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slipway-sample: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        for name in &knobs.print {
            let value = std::env::var(name).unwrap_or_default();
            log("info", &format!("config {name}={value}"), json!({}));
        }
        if let Some(after) = knobs.crash_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                log(
                    "error",
                    "crashing as asked (SAMPLE_CRASH_AFTER_MS)",
                    json!({}),
                );
                std::process::exit(1);
            });
        }
        match mode.as_str() {
            "web" => web(knobs).await,
            "worker" => worker(knobs).await,
            _ => job(knobs).await,
        }
    })
}

/// A future that resolves on SIGTERM or SIGINT, unless the knob says to ignore SIGTERM.
async fn terminated(ignore_sigterm: bool) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                if ignore_sigterm {
                    log("warn", "SIGTERM received and ignored (SAMPLE_IGNORE_SIGTERM)", json!({}));
                    continue;
                }
                log("info", "SIGTERM received", json!({}));
                return;
            }
            _ = int.recv() => {
                log("info", "SIGINT received", json!({}));
                return;
            }
        }
    }
}

struct Web {
    knobs: Knobs,
    started: Instant,
    index: Bytes,
    version: HeaderValue,
    healthy: AtomicBool,
    served: AtomicU64,
    metrics: Metrics,
}

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
const ROUTES: [&str; 2] = ["/", "/work"];

/// What `/metrics` reports: requests by route and status, and their durations, in the
/// Prometheus text format (atomics only, so the request path stays cheap).
#[derive(Default)]
struct Metrics {
    /// `[route][ok, error]`.
    requests: [[AtomicU64; 2]; 2],
    /// `[route][bucket]`, cumulative at render time; the last is +Inf.
    buckets: [[AtomicU64; 9]; 2],
    /// `[route]` sum of durations in microseconds.
    micros: [AtomicU64; 2],
}

impl Metrics {
    fn observe(&self, route: usize, ok: bool, took: Duration) {
        self.requests[route][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[route][b].fetch_add(1, Ordering::Relaxed);
        self.micros[route].fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, version: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        out.push_str("# HELP sample_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE sample_http_requests_total counter\n");
        for (r, route) in ROUTES.iter().enumerate() {
            for (k, status) in ["200", "500"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "sample_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                    self.requests[r][k].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP sample_http_request_duration_seconds How long requests took.\n");
        out.push_str("# TYPE sample_http_request_duration_seconds histogram\n");
        for (r, route) in ROUTES.iter().enumerate() {
            let mut cumulative = 0;
            for (b, bound) in BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                cumulative += self.buckets[r][b].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "sample_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "sample_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                self.micros[r].load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "sample_http_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
            );
        }
        out.push_str("# HELP sample_info The sample app's version.\n# TYPE sample_info gauge\n");
        let _ = writeln!(out, "sample_info{{version=\"{version}\"}} 1");
        out
    }
}

type Body = Full<Bytes>;

fn respond(
    state: &Web,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-sample-version", state.version.clone());
    res
}

async fn handle(state: Arc<Web>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let route = ROUTES.iter().position(|r| *r == req.uri().path());
    let res = serve(&state, req).await;
    if let Some(r) = route {
        state
            .metrics
            .observe(r, res.status().is_success(), started.elapsed());
    }
    Ok(res)
}

async fn serve(state: &Arc<Web>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let counted = matches!(path, "/" | "/work");
    if counted {
        state.served.fetch_add(1, Ordering::Relaxed);
        if !state.knobs.latency.is_zero() {
            tokio::time::sleep(state.knobs.latency).await;
        }
        if state.knobs.fail_rate > 0.0 && fastrand::f64() < state.knobs.fail_rate {
            let body =
                json!({ "error": "injected failure", "version": state.knobs.version }).to_string();
            return respond(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                body.into(),
            );
        }
    }
    match (req.method().as_str(), path) {
        ("GET" | "HEAD", "/") => respond(
            state,
            StatusCode::OK,
            "application/json",
            state.index.clone(),
        ),
        ("GET" | "HEAD", "/work") => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let body = format!(
                "{{\"worked_ms\":{ms},\"version\":{}}}",
                json!(state.knobs.version)
            );
            respond(state, StatusCode::OK, "application/json", body.into())
        }
        ("GET" | "HEAD", "/health") => {
            if state.healthy.load(Ordering::Relaxed) {
                respond(
                    state,
                    StatusCode::OK,
                    "text/plain",
                    Bytes::from_static(b"ok\n"),
                )
            } else {
                respond(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    Bytes::from_static(b"unhealthy\n"),
                )
            }
        }
        ("GET" | "HEAD", "/health/detailed") => {
            let healthy = state.healthy.load(Ordering::Relaxed);
            let body = json!({
                "status": if healthy { "ok" } else { "unhealthy" },
                "version": state.knobs.version,
                "checks": {
                    "listener": { "status": "ok" },
                    "self": { "status": if healthy { "ok" } else { "failing" } },
                },
                "uptime_s": state.started.elapsed().as_secs(),
                "requests": state.served.load(Ordering::Relaxed),
            });
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(state, status, "application/json", body.to_string().into())
        }
        // Toggles for tests of liveness and readiness without a restart.
        ("POST", "/admin/unhealthy") => {
            state.healthy.store(false, Ordering::Relaxed);
            respond(
                state,
                StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"now unhealthy\n"),
            )
        }
        ("POST", "/admin/healthy") => {
            state.healthy.store(true, Ordering::Relaxed);
            respond(
                state,
                StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"now healthy\n"),
            )
        }
        ("GET", "/metrics") => respond(
            state,
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(&state.knobs.version).into(),
        ),
        _ => respond(
            state,
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    }
}

async fn web(knobs: Knobs) -> ExitCode {
    tokio::time::sleep(knobs.startup).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], knobs.port));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            log("error", &format!("cannot listen on {addr}: {e}"), json!({}));
            return ExitCode::FAILURE;
        }
    };
    let echo: serde_json::Map<String, serde_json::Value> = knobs
        .echo
        .iter()
        .map(|k| (k.clone(), json!(std::env::var(k).unwrap_or_default())))
        .collect();
    let index = json!({
        "version": knobs.version,
        "instance": std::env::var("SLIPWAY_INSTANCE").unwrap_or_default(),
        "release": std::env::var("SLIPWAY_RELEASE").unwrap_or_default(),
        "env": echo,
    });
    let state = Arc::new(Web {
        version: HeaderValue::from_str(&knobs.version)
            .unwrap_or(HeaderValue::from_static("invalid")),
        healthy: AtomicBool::new(!knobs.unhealthy),
        index: Bytes::from(index.to_string()),
        started: Instant::now(),
        served: AtomicU64::new(0),
        metrics: Metrics::default(),
        knobs,
    });
    log(
        "info",
        "listening",
        json!({ "addr": addr.to_string(), "version": state.knobs.version }),
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let stop = terminated(state.knobs.ignore_sigterm);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move { let _ = conn.await; });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    // In-flight requests finish; idle keep-alive connections close.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        log(
            "warn",
            "in-flight requests still running after 30s; exiting",
            json!({}),
        );
    }
    log("info", "stopped", json!({}));
    ExitCode::SUCCESS
}

fn touch(path: &str) {
    if let Err(e) = std::fs::write(path, unix_now().to_string()) {
        log(
            "warn",
            &format!("cannot write heartbeat {path}: {e}"),
            json!({}),
        );
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn run_job(knobs: &Knobs, n: u64) -> bool {
    log("info", &format!("job {n} started"), json!({ "job": n }));
    tokio::time::sleep(knobs.job).await;
    let ok = !(knobs.fail_rate > 0.0 && fastrand::f64() < knobs.fail_rate);
    if ok {
        log("info", &format!("job {n} finished"), json!({ "job": n }));
    } else {
        log("error", &format!("job {n} failed"), json!({ "job": n }));
    }
    if let Some(path) = &knobs.heartbeat {
        touch(path);
    }
    ok
}

async fn worker(knobs: Knobs) -> ExitCode {
    tokio::time::sleep(knobs.startup).await;
    if let Some(path) = &knobs.heartbeat {
        touch(path);
    }
    log(
        "info",
        "worker started",
        json!({ "version": knobs.version }),
    );
    let stop = terminated(knobs.ignore_sigterm);
    tokio::pin!(stop);
    let mut stopping = false;
    for n in 1.. {
        let job = run_job(&knobs, n);
        tokio::pin!(job);
        // A stop request lets the current job finish.
        loop {
            tokio::select! {
                _ = &mut job => break,
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    log("info", &format!("stopping after job {n}"), json!({ "job": n }));
                }
            }
        }
        if stopping {
            break;
        }
    }
    log("info", "worker stopped", json!({}));
    ExitCode::SUCCESS
}

async fn job(knobs: Knobs) -> ExitCode {
    tokio::time::sleep(knobs.startup).await;
    let ok = run_job(&knobs, 1).await;
    if !ok {
        return ExitCode::FAILURE;
    }
    ExitCode::from(knobs.exit_code)
}
