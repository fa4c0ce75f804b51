//! What the tests and benchmarks that compare Slipway with a real Prometheus share:
//! a Prometheus server started in a temporary folder, an exporter serving a scrape page
//! computed at each request, a small blocking HTTP client, and the comparison of query
//! answers within a tolerance.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// A free port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP answer: status and body.
pub type Reply = (u16, String);

/// One HTTP/1.1 request (`Connection: close`), blocking; `None` when nothing answers.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Reply> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse().ok();
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            out.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        out.resize(n, 0);
        reader.read_exact(&mut out).ok()?;
    } else {
        reader.read_to_end(&mut out).ok()?;
    }
    Some((status, String::from_utf8_lossy(&out).into_owned()))
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    http("GET", url, headers, &[])
}

/// Percent-encodes a query parameter.
pub fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// Whether Debian's `prometheus` package (`prometheus`, `promtool`) is installed; the tests
/// fail with this hint when it is not (`scripts/test` installs it).
pub fn require_prometheus() {
    for bin in ["prometheus", "promtool"] {
        assert!(
            Command::new(bin).arg("--version").output().is_ok(),
            "`{bin}` is not installed: `scripts/test` installs Debian's `prometheus` package"
        );
    }
}

/// A child process killed (and waited for) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus server in a folder, killed when dropped.
pub struct Prometheus {
    _process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Prometheus {
    /// Starts Prometheus with `config` (its YAML) and extra flags, storing in `dir/tsdb`, and
    /// waits until it is ready.
    pub fn start(dir: &Path, config: &str, flags: &[&str]) -> Prometheus {
        require_prometheus();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("write prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags);
        let base = format!("http://127.0.0.1:{port}");
        let _process = start_ready(cmd, &dir.join("prometheus.log"), &base);
        Prometheus { _process, base }
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) in a folder, killed when dropped.
pub struct Alertmanager {
    _process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (its YAML), storing in `dir/alertmanager`, and waits
    /// until it is ready.
    pub fn start(dir: &Path, config: &str) -> Alertmanager {
        assert!(
            Command::new("prometheus-alertmanager")
                .arg("--version")
                .output()
                .is_ok(),
            "`prometheus-alertmanager` is not installed: `scripts/test` installs Debian's package"
        );
        let file = dir.join("alertmanager.yml");
        std::fs::write(&file, config).expect("write alertmanager.yml");
        let port = free_port();
        let cluster = free_port();
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.path={}",
                dir.join("alertmanager").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"));
        let base = format!("http://127.0.0.1:{port}");
        let _process = start_ready(cmd, &dir.join("alertmanager.log"), &base);
        Alertmanager { _process, base }
    }
}

/// Starts `cmd` (its stderr to `log`) and waits until `base/-/ready` answers 200, as
/// Prometheus and Alertmanager say they are ready.
fn start_ready(mut cmd: Command, log: &Path, base: &str) -> Process {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let log = std::fs::File::create(log).expect("log");
    let process = Process(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}")),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if get(&format!("{base}/-/ready"), &[]).is_some_and(|(s, _)| s == 200) {
            return process;
        }
        // Dropped by the panic: killed and waited for.
        assert!(Instant::now() < deadline, "{name} did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus-compatible query API to ask: a base URL and the headers to send.
pub struct QueryApi<'a> {
    /// `http://host:port`.
    pub base: &'a str,
    /// `Authorization` and such.
    pub headers: Vec<(&'a str, String)>,
}

impl QueryApi<'_> {
    fn call(&self, path: &str) -> Reply {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        get(&format!("{}{path}", self.base), &headers).expect("the query API answers")
    }

    /// The raw answer of `path` (`/api/v1/labels`…).
    pub fn raw(&self, path: &str) -> Reply {
        self.call(path)
    }

    /// `/api/v1/query` at `t` (ms).
    pub fn instant(&self, q: &str, t: i64) -> Answer {
        let (status, body) = self.call(&format!(
            "/api/v1/query?query={}&time={}.{:03}",
            encode(q),
            t.div_euclid(1000),
            t.rem_euclid(1000)
        ));
        assert_eq!(status, 200, "{q}: {body}");
        parse_answer(&body)
    }

    /// `/api/v1/query_range`.
    pub fn range(&self, q: &str, start: i64, end: i64, step: i64) -> Answer {
        let (status, body) = self.call(&format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(q),
            start as f64 / 1000.0,
            end as f64 / 1000.0,
            step as f64 / 1000.0
        ));
        assert_eq!(status, 200, "{q}: {body}");
        parse_answer(&body)
    }
}

/// A query's answer: a scalar, or series (by their labels' text) → points.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A number.
    Scalar(f64),
    /// Series and their points `(ms, value)`.
    Series(BTreeMap<String, Vec<(i64, f64)>>),
}

/// A sample value as the API writes it.
pub fn prom_float(v: &Json) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

/// A series' labels as one text (`{a="1", b="2"}`, sorted), its key in an [`Answer`].
pub fn series_key<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    pairs.sort();
    format!("{{{}}}", pairs.join(", "))
}

fn labels_of(metric: &Json) -> String {
    series_key(
        metric
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
    )
}

/// Reads a `/api/v1/query` or `/query_range` answer.
pub fn parse_answer(body: &str) -> Answer {
    let v: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let data = &v["data"];
    let ms = |t: &Json| (t.as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
    match data["resultType"].as_str() {
        Some("scalar") => Answer::Scalar(prom_float(&data["result"][1])),
        Some("vector") => Answer::Series(
            data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        labels_of(&r["metric"]),
                        vec![(ms(&r["value"][0]), prom_float(&r["value"][1]))],
                    )
                })
                .collect(),
        ),
        Some("matrix") => Answer::Series(
            data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let points = r["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| (ms(&p[0]), prom_float(&p[1])))
                        .collect();
                    (labels_of(&r["metric"]), points)
                })
                .collect(),
        ),
        other => panic!("unexpected result type {other:?}: {body}"),
    }
}

/// How close two answers must be.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Relative difference allowed between values.
    pub relative: f64,
    /// Absolute difference allowed (for values near 0).
    pub absolute: f64,
    /// Whether points must be at the same timestamps (instant answers evaluated at one time
    /// are; raw samples of two scrapers are not).
    pub same_times: bool,
}

impl Tolerance {
    /// Floating-point rounding only.
    pub const EXACT: Tolerance = Tolerance {
        relative: 1e-9,
        absolute: 1e-9,
        same_times: true,
    };
}

fn close(a: f64, b: f64, tol: Tolerance) -> bool {
    (a.is_nan() && b.is_nan())
        || a == b
        || (a - b).abs() <= tol.absolute
        || (a - b).abs() <= tol.relative * a.abs().max(b.abs())
}

/// Whether two answers agree within `tol`; else what differs.
pub fn compare(what: &str, ours: &Answer, theirs: &Answer, tol: Tolerance) -> Result<(), String> {
    match (ours, theirs) {
        (Answer::Scalar(a), Answer::Scalar(b)) if close(*a, *b, tol) => Ok(()),
        (Answer::Series(a), Answer::Series(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            if ka != kb {
                return Err(format!(
                    "{what}: series differ\n ours:   {ka:?}\n theirs: {kb:?}"
                ));
            }
            for (k, pa) in a {
                let pb = &b[k];
                let same = pa.len() == pb.len()
                    && pa.iter().zip(pb).all(|((ta, va), (tb, vb))| {
                        (!tol.same_times || ta == tb) && close(*va, *vb, tol)
                    });
                if !same {
                    return Err(format!("{what}: {k}\n ours:   {pa:?}\n theirs: {pb:?}"));
                }
            }
            Ok(())
        }
        _ => Err(format!("{what}:\n ours:   {ours:?}\n theirs: {theirs:?}")),
    }
}

/// An exporter on loopback: every `GET` answers the text `page` computes from the seconds
/// since it started (Prometheus' text format), until dropped.
pub struct Exporter {
    /// `http://127.0.0.1:PORT/metrics`.
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or(""),
        );
    }
}

impl Exporter {
    /// Serves `page(elapsed seconds)`.
    pub fn start(page: impl Fn(f64) -> String + Send + Sync + 'static) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let page = Arc::new(page);
        let started = Instant::now();
        let halt = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let page = page.clone();
                std::thread::spawn(move || serve(conn, started, page.as_ref()));
            }
        });
        Exporter {
            url: format!("http://{addr}/metrics"),
            stop,
        }
    }
}

/// Answers requests on one connection (keep-alive) until the client closes it.
fn serve(conn: TcpStream, started: Instant, page: &(dyn Fn(f64) -> String + Send + Sync)) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = page(started.elapsed().as_secs_f64());
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(text.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// One request a [`Receiver`] took.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its `Idempotency-Key` header (empty when it had none).
    pub key: String,
    /// Its body, as JSON (null when it is not).
    pub body: Json,
    /// When it arrived.
    pub at: Instant,
}

/// A notification receiver on loopback (a webhook, Slack, PagerDuty stand-in): answers every
/// `POST` with the status set (200 at first) and records those it answered 2xx, until
/// dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

impl Receiver {
    /// Starts one.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, halt) = (got.clone(), status.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (g, s) = (g.clone(), s.clone());
                std::thread::spawn(move || take(conn, &g, &s));
            }
        });
        Receiver {
            base: format!("http://{addr}"),
            got,
            status,
            stop,
        }
    }

    /// The requests it answered 2xx to, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Answers `status` from now on (503: down).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

fn take(
    conn: TcpStream,
    got: &std::sync::Mutex<Vec<Received>>,
    status: &std::sync::atomic::AtomicU16,
) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut len, mut key) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        if (200..300).contains(&code)
            && let Ok(mut g) = got.lock()
        {
            g.push(Received {
                path,
                key,
                body: serde_json::from_slice(&body).unwrap_or(Json::Null),
                at: Instant::now(),
            });
        }
        let reply = format!(
            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{{}}"
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A real SMTP server (aiosmtpd, Debian's `python3-aiosmtpd`) in a folder, requiring STARTTLS
/// with a certificate from a CA of its own (made by `openssl`) and `AUTH` as `user`, killed when
/// dropped. Each message it accepts is kept as JSON parsed by Python's `email` package.
pub struct Smtp {
    _process: Process,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The certificate (PEM) of the CA that signed its own, for the client to trust.
    pub cert_pem: String,
    /// The login it takes.
    pub user: String,
    /// The password it takes.
    pub password: String,
    dir: std::path::PathBuf,
}

impl Smtp {
    /// Starts one in `dir` and waits until it greets.
    pub fn start(dir: &Path) -> Smtp {
        let python = "/usr/bin/python3";
        assert!(
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success()),
            "aiosmtpd is not installed: `scripts/test` installs Debian's `python3-aiosmtpd`"
        );
        // A CA of its own, and a certificate for localhost signed by it (rustls, rightly,
        // takes no CA certificate as a server's).
        let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (cert, key, csr) = (
            dir.join("smtp.crt"),
            dir.join("smtp.key"),
            dir.join("smtp.csr"),
        );
        let ext = dir.join("smtp.ext");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("extensions");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let made = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                made.is_ok_and(|s| s.success()),
                "openssl cannot make a certificate (`scripts/test` installs `openssl`)"
            );
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=Slipway test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=localhost"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("2"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, include_str!("smtp_server.py")).expect("write the server");
        let out = dir.join("mail");
        std::fs::create_dir_all(&out).expect("mail folder");
        let port = free_port();
        let (user, password) = ("alerts@example.com".to_string(), "s3cret-Pa55".to_string());
        let log = std::fs::File::create(dir.join("smtp.log")).expect("log");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(&out)
            .arg(&cert)
            .arg(&key)
            .arg(&user)
            .arg(&password)
            .stdout(Stdio::null())
            .stderr(log);
        let process = Process(cmd.spawn().expect("python3 starts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let greeted = TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220")
            });
            if greeted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server did not start: {}",
                std::fs::read_to_string(dir.join("smtp.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Smtp {
            _process: process,
            port,
            cert_pem: std::fs::read_to_string(&ca).expect("certificate"),
            user,
            password,
            dir: out,
        }
    }

    /// The messages accepted, in order, each as Python's `email` package reads it (`from`,
    /// `to`, `subject`, `message_id`, `references`, `text`, `html`, `auth_user`, `tls`…).
    pub fn received(&self) -> Vec<Json> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect()
    }

    /// Refuses every message with `reply` (`451 4.3.0 try later`), or accepts them again.
    pub fn answer(&self, reply: Option<&str>) {
        let file = self.dir.join("answer");
        match reply {
            Some(r) => std::fs::write(file, r).expect("answer"),
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}
