//! The data plane end to end: `slipway proxy` in front of real sample backends, driven over its
//! admin API; and under the control plane, surviving kills of either side.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Project, slipway_bin, wait_for};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sample web backend labelled `version`.
fn backend(version: &str) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(slipway_bin().with_file_name("slipway-sample"))
        .arg("web")
        .env("PORT", port.to_string())
        .env("SAMPLE_VERSION", version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    wait_for("the backend", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).ok()
    });
    (Proc(child), addr)
}

/// `slipway proxy` in a temporary directory, and its admin client.
struct TestProxy {
    _proc: Proc,
    dir: tempfile::TempDir,
    admin: String,
    client: reqwest::Client,
}

impl TestProxy {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir)
    }

    fn start_in(dir: tempfile::TempDir) -> Self {
        let _ = std::fs::remove_file(dir.path().join("proxy.json"));
        let child = Command::new(slipway_bin())
            .args(["proxy", "--dir"])
            .arg(dir.path())
            .args(["--admin", "127.0.0.1:0", "--access-log-sample", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let info: Value = wait_for("proxy.json", Duration::from_secs(10), || {
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("proxy.json")).ok()?).ok()
        });
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        TestProxy {
            _proc: Proc(child),
            dir,
            admin: info["admin"].as_str().unwrap().to_string(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    async fn put_routes(&self, table: &Value) -> Value {
        let r = self
            .client
            .put(format!("http://{}/routes", self.admin))
            .json(table)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }
}

fn table(version: u64, listen: &str, pools: Value, extra: Value) -> Value {
    let mut route = json!({
        "service": "web",
        "listen": listen,
        "drain_ms": 10_000,
        "pools": pools,
    });
    for (k, v) in extra.as_object().unwrap() {
        route[k] = v.clone();
    }
    json!({ "version": version, "routes": [route] })
}

fn split(stable: &str, canary: &str, canary_weight: f64) -> Value {
    json!([
        { "release": "r1", "track": "stable", "weight": 100.0 - canary_weight,
          "backends": [{ "id": "s", "addr": stable }] },
        { "release": "r2", "track": "canary", "weight": canary_weight,
          "backends": [{ "id": "c", "addr": canary }] },
    ])
}

/// Sends `n` requests (32 at a time) and counts answers by `x-sample-version` (or status).
async fn count(
    url: &str,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> HashMap<String, usize> {
    let client = reqwest::Client::new();
    let headers = Arc::new(headers);
    let mut counts = HashMap::new();
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 32).min(n))
            .map(|k| {
                let mut req = client.get(url);
                for (name, value) in headers(k) {
                    req = req.header(name, value);
                }
                tokio::spawn(req.send())
            })
            .collect();
        for b in batch {
            let r = b.await.unwrap().unwrap();
            let key = r.headers().get("x-sample-version").map_or_else(
                || r.status().to_string(),
                |v| v.to_str().unwrap().to_string(),
            );
            *counts.entry(key).or_default() += 1;
        }
        i += 32;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_sticky_keys_keep_their_release() {
    let (_s, stable) = backend("v1");
    let (_c, canary) = backend("v2");
    let proxy = TestProxy::start();
    let applied = proxy
        .put_routes(&table(
            1,
            "127.0.0.1:0",
            split(&stable, &canary, 10.0),
            json!({ "sticky": { "header": "x-tenant", "cookie": null }, "canary_tenants": ["acme"] }),
        ))
        .await;
    let listen = applied["routes"][0]["listen"].as_str().unwrap().to_string();
    assert!(!listen.ends_with(":0"), "the port was resolved: {listen}");
    let url = format!("http://{listen}/");

    // 10 000 requests from distinct clients (no sticky key): 10 % ± 1.5 % on the canary.
    let counts = count(&url, 10_000, |_| Vec::new()).await;
    let on_canary = counts.get("v2").copied().unwrap_or(0) as f64 / 100.0;
    assert!(
        (8.5..=11.5).contains(&on_canary),
        "{on_canary}% on the canary: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 10_000, "{counts:?}");

    // A sticky key: all its requests on one release, across weight changes that keep its side.
    let tenants: Vec<String> = (0..40).map(|i| format!("tenant-{i}")).collect();
    let mut side_at_10: HashMap<String, String> = HashMap::new();
    for t in &tenants {
        let t2 = t.clone();
        let c = count(&url, 25, move |_| vec![("x-tenant".into(), t2.clone())]).await;
        assert_eq!(c.len(), 1, "{t} was split: {c:?}");
        side_at_10.insert(t.clone(), c.keys().next().unwrap().clone());
    }
    let acme = count(&url, 1000, |_| vec![("x-tenant".into(), "acme".into())]).await;
    assert_eq!(
        acme,
        HashMap::from([("v2".to_string(), 1000)]),
        "the allow-listed tenant"
    );
    let one = count(&url, 1000, |_| vec![("x-tenant".into(), "tenant-7".into())]).await;
    assert_eq!(
        one.len(),
        1,
        "1 000 requests of one key on one release: {one:?}"
    );

    for (version, weight) in [(2, 30.0), (3, 60.0)] {
        proxy
            .put_routes(&table(
                version,
                &listen,
                split(&stable, &canary, weight),
                json!({ "sticky": { "header": "x-tenant", "cookie": null } }),
            ))
            .await;
        for t in &tenants {
            let t2 = t.clone();
            let c = count(&url, 10, move |_| vec![("x-tenant".into(), t2.clone())]).await;
            assert_eq!(c.len(), 1, "{t} was split at {weight}%: {c:?}");
            if side_at_10[t] == "v2" {
                assert_eq!(
                    c.keys().next().unwrap(),
                    "v2",
                    "{t} left the canary at {weight}%"
                );
            }
        }
    }

    // The header override reaches a track regardless of weights; a stale table is refused.
    let forced = count(&url, 20, |_| {
        vec![("x-slipway-track".into(), "stable".into())]
    })
    .await;
    assert_eq!(forced, HashMap::from([("v1".to_string(), 20)]));
    let stale = proxy
        .client
        .put(format!("http://{}/routes", proxy.admin))
        .json(&table(2, &listen, split(&stable, &canary, 0.0), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    assert!(stale.text().await.unwrap().contains("not newer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_switch_lets_in_flight_requests_finish() {
    let (_a, old) = backend("v1");
    let (_b, new) = backend("v2");
    let proxy = TestProxy::start();
    let one = |version, addr: &str, release: &str| {
        table(
            version,
            "127.0.0.1:0",
            json!([{ "release": release, "track": "stable", "weight": 100.0,
                     "backends": [{ "id": release, "addr": addr }] }]),
            json!({}),
        )
    };
    let applied = proxy.put_routes(&one(1, &old, "r1")).await;
    let listen = applied["routes"][0]["listen"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let in_flight: Vec<_> = (0..200)
        .map(|_| {
            let req = client.get(format!("http://{listen}/work?ms=2000")).send();
            tokio::spawn(async move {
                let r = req.await?;
                Ok::<_, reqwest::Error>((
                    r.status().as_u16(),
                    r.headers().get("x-sample-version").cloned(),
                ))
            })
        })
        .collect();
    // Switch once they are all in flight.
    wait_for_async(|| async {
        let stats: Value = proxy.get("/stats").await.json().await.ok()?;
        (stats[0]["in_flight"].as_i64()? >= 200).then_some(())
    })
    .await;
    let mut switched = one(2, &new, "r2");
    switched["routes"][0]["listen"] = listen.clone().into();
    proxy.put_routes(&switched).await;
    let after = client
        .get(format!("http://{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.headers()["x-sample-version"],
        "v2",
        "new requests go to the new release"
    );
    for r in in_flight {
        let (status, version) = r.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            version.unwrap(),
            "v1",
            "in-flight requests finish on the old release"
        );
    }
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_count_per_release() {
    let (_s, stable) = backend("v1");
    let (_c, canary) = backend("v2");
    let proxy = TestProxy::start();
    let applied = proxy
        .put_routes(&table(
            1,
            "127.0.0.1:0",
            split(&stable, &canary, 50.0),
            json!({}),
        ))
        .await;
    let url = format!(
        "http://{}/",
        applied["routes"][0]["listen"].as_str().unwrap()
    );
    let sent = count(&url, 400, |_| Vec::new()).await;
    // Faults: 100 % aborts with 502 on this route.
    let fault = proxy
        .client
        .put(format!("http://{}/faults/-/web", proxy.admin))
        .json(&json!({ "abort_percent": 100, "abort_status": 502 }))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let aborted = count(&url, 50, |_| Vec::new()).await;
    assert_eq!(
        aborted,
        HashMap::from([("502 Bad Gateway".to_string(), 50)])
    );
    proxy
        .client
        .delete(format!("http://{}/faults/-/web", proxy.admin))
        .send()
        .await
        .unwrap();

    let text = proxy.get("/metrics").await.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let total = |release: &str, code: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "slipway_proxy_requests_total"
                    && s.labels.get("release") == Some(release)
                    && s.labels.get("code") == Some(code)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(total("r1", "2xx") as usize, sent["v1"], "{text}");
    assert_eq!(total("r2", "2xx") as usize, sent["v2"], "{text}");
    assert_eq!((total("r1", "5xx") + total("r2", "5xx")) as usize, 50);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "slipway_proxy_request_duration_seconds"),
        "the latency histogram is there"
    );
    let stats: Value = proxy.get("/stats?window=60").await.json().await.unwrap();
    let r1 = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["release"] == "r1")
        .unwrap();
    assert_eq!(r1["status_2xx"].as_u64().unwrap() as usize, sent["v1"]);
    assert!(r1["p99_ms"].as_f64().unwrap() > 0.0);
    let unauthorized = reqwest::get(format!("http://{}/metrics", proxy.admin))
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_serves_its_saved_table_and_maintenance_modes_work() {
    let (_s, stable) = backend("v1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let proxy = TestProxy::start_in(dir);
    let pools = json!([{ "release": "r1", "track": "stable", "weight": 100.0,
                         "backends": [{ "id": "s", "addr": stable }] }]);
    let applied = proxy
        .put_routes(&table(1, "127.0.0.1:0", pools.clone(), json!({})))
        .await;
    let listen = applied["routes"][0]["listen"].as_str().unwrap().to_string();
    let stopped = proxy
        .put_routes(&table(
            2,
            &listen,
            pools.clone(),
            json!({ "mode": { "type": "stop", "message": "back at 10:00" } }),
        ))
        .await;
    assert_eq!(stopped["version"], 2);
    let r = reqwest::get(format!("http://{listen}/")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("back at 10:00"));
    // Pause holds requests until the route serves again.
    proxy
        .put_routes(&table(
            3,
            &listen,
            pools.clone(),
            json!({ "mode": { "type": "pause", "timeout_ms": 10_000 } }),
        ))
        .await;
    let held_since = Instant::now();
    let held = tokio::spawn(reqwest::get(format!("http://{listen}/")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the request is held while paused");
    proxy
        .put_routes(&table(4, &listen, pools.clone(), json!({})))
        .await;
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "and answered once the route serves again");
    assert!(held_since.elapsed() >= Duration::from_millis(300));
    proxy.put_routes(&table(5, &listen, pools, json!({}))).await;
    let TestProxy { _proc, dir, .. } = proxy;
    drop(_proc);
    assert!(path.join("routes.json").exists());
    let started = Instant::now();
    let again = TestProxy::start_in(dir);
    let r = wait_for_async(|| async { reqwest::get(format!("http://{listen}/")).await.ok() }).await;
    assert_eq!(
        r.status(),
        200,
        "the saved table is served on the same port"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let routes: Value = again.get("/routes").await.json().await.unwrap();
    assert_eq!(routes["version"], 5);
}

#[test]
fn the_control_plane_runs_the_proxy_and_neither_kill_drops_a_request() {
    let project = Project::new(
        r#"
[project]
name = "traffic"

[services.web]
start = "slipway-sample web"
port = 0
replicas = 2
health = { path = "/health", interval = "200ms" }
"#,
    );
    let mut daemon = project.start();
    let (status, port) = project.serving();
    assert_eq!(status["services"][0]["traffic"][0]["release"], "r1");
    let url = format!("http://127.0.0.1:{port}/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Load while the control plane is killed: not one request fails.
    let load = {
        let url = url.clone();
        rt.spawn(async move { load_for(&url, Duration::from_secs(3)).await })
    };
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill();
    let (ok, failed) = rt.block_on(load).unwrap();
    assert!(ok > 100, "{ok} requests served");
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed while the control plane was down",
        ok + failed
    );

    // Back up; then kill -9 the proxy: it is restarted with its table and serves within a second.
    let _daemon = project.start();
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(project.state().root().join("proxy/proxy.json")).unwrap(),
    )
    .unwrap();
    let proxy_pid = info["pid"].as_i64().unwrap();
    wait_for("the re-adopted proxy", Duration::from_secs(10), || {
        let events = project.ok(&["events", "--limit", "100"]);
        events.contains("proxy re-adopted").then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let back = rt.block_on(async {
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return killed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "the proxy did not come back"
            );
        }
    });
    eprintln!("proxy serving again {back:?} after kill -9");
    assert!(
        back < Duration::from_secs(1),
        "serving again after {back:?}"
    );
    project.ok(&["down"]);
}

async fn load_for(url: &str, duration: Duration) -> (usize, usize) {
    let client = reqwest::Client::new();
    let end = Instant::now() + duration;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while Instant::now() < end {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut total = (0, 0);
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        total.0 += ok;
        total.1 += failed;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_may_speak_h2c() {
    use http_body_util::BodyExt;
    let (_s, stable) = backend("v1");
    let proxy = TestProxy::start();
    let pools = json!([{ "release": "r1", "track": "stable", "weight": 100.0,
                         "backends": [{ "id": "s", "addr": stable }] }]);
    let applied = proxy
        .put_routes(&table(1, "127.0.0.1:0", pools, json!({})))
        .await;
    let listen = applied["routes"][0]["listen"].as_str().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake with prior knowledge");
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get(format!("http://{listen}/"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-sample-version"], "v1");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"version\":\"v1\""));
    }
}

/// An echo server that accepts any upgrade: answers 101, then sends back what it reads.
async fn upgrade_echo_backend() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_work_and_are_closed_when_their_release_has_drained() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let old = upgrade_echo_backend().await;
    let new = upgrade_echo_backend().await;
    let proxy = TestProxy::start();
    let one = |version: u64, listen: &str, addr: &str, release: &str| {
        table(
            version,
            listen,
            json!([{ "release": release, "track": "stable", "weight": 100.0,
                     "backends": [{ "id": release, "addr": addr }] }]),
            json!({ "drain_ms": 700 }),
        )
    };
    let applied = proxy.put_routes(&one(1, "127.0.0.1:0", &old, "r1")).await;
    let listen = applied["routes"][0]["listen"].as_str().unwrap().to_string();
    let mut ws = tokio::net::TcpStream::connect(&listen).await.unwrap();
    ws.write_all(
        b"GET /socket HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            ws.read(&mut byte).await.unwrap(),
            1,
            "the proxy answered the upgrade"
        );
        head.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut echo = [0u8; 4];
    ws.write_all(b"ping").await.unwrap();
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    // The release leaves the table: the socket keeps working through the drain, then closes.
    let mut switched = one(2, &listen, &new, "r2");
    switched["routes"][0]["listen"] = listen.clone().into();
    proxy.put_routes(&switched).await;
    let removed = Instant::now();
    ws.write_all(b"pong").await.unwrap();
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"pong", "still open while draining");
    let mut rest = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.read(&mut rest))
        .await
        .expect("closed at the end of the drain");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        removed.elapsed() >= Duration::from_millis(600),
        "not before the drain time: {:?}",
        removed.elapsed()
    );
}
