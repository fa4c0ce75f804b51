//! Health checks: HTTP, TCP, command, heartbeat file and "stayed up", each bounded by its
//! timeout, and the threshold logic that turns results into healthy/unhealthy.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use slipway_spec::resolve::{Probe, ProbeCheck};

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// When it ran.
    pub at: Timestamp,
    /// Passed.
    pub ok: bool,
    /// What was seen ("200 OK", "connection refused", "exit status 1").
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// What a check needs to know about the instance.
pub struct Target<'a> {
    /// `$PORT`.
    pub port: Option<u16>,
    /// The instance's directory (heartbeat files are relative to it).
    pub run_dir: &'a Path,
    /// Working directory for command checks.
    pub cwd: &'a Path,
    /// Environment for command checks.
    pub env: &'a IndexMap<String, String>,
    /// How long the instance has been up.
    pub uptime: Duration,
}

/// Runs a check once.
pub async fn check(client: &reqwest::Client, probe: &Probe, target: &Target<'_>) -> CheckResult {
    let started = std::time::Instant::now();
    let timeout = probe.timeout.std();
    let outcome = tokio::time::timeout(timeout, run(client, probe, target)).await;
    let (ok, detail) = match outcome {
        Ok(r) => r,
        Err(_) => (false, format!("timed out after {}", probe.timeout)),
    };
    CheckResult {
        at: Timestamp::now(),
        ok,
        detail,
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn run(client: &reqwest::Client, probe: &Probe, target: &Target<'_>) -> (bool, String) {
    match &probe.check {
        ProbeCheck::Http { path, status } => {
            let Some(port) = target.port else {
                return (false, "no $PORT to check".to_string());
            };
            let url = format!("http://127.0.0.1:{port}{path}");
            match client.get(&url).send().await {
                Ok(response) => {
                    let got = response.status();
                    let ok = match status {
                        Some(want) => got.as_u16() == *want,
                        None => got.is_success(),
                    };
                    (ok, format!("GET {path}: {got}"))
                }
                Err(e) if e.is_connect() => (false, format!("GET {path}: connection refused")),
                Err(e) => (false, format!("GET {path}: {e}")),
            }
        }
        ProbeCheck::Tcp => {
            let Some(port) = target.port else {
                return (false, "no $PORT to check".to_string());
            };
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => (true, format!("port {port} accepts connections")),
                Err(e) => (false, format!("port {port}: {e}")),
            }
        }
        ProbeCheck::Command { command } => {
            let output = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .current_dir(target.cwd)
                .env_clear()
                .envs(target.env)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await;
            match output {
                Ok(o) if o.status.success() => (true, "exit status 0".to_string()),
                Ok(o) => (false, o.status.to_string()),
                Err(e) => (false, format!("cannot run `{command}`: {e}")),
            }
        }
        ProbeCheck::Heartbeat { file, max_age } => {
            let path = target.run_dir.join(file);
            match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(modified) => {
                    let age = modified.elapsed().unwrap_or_default();
                    let ok = age <= max_age.std();
                    (ok, format!("heartbeat {}ms old", age.as_millis()))
                }
                Err(_) => (false, "no heartbeat yet".to_string()),
            }
        }
        ProbeCheck::Uptime => (
            target.uptime >= probe.start_period.std(),
            format!("up {}s", target.uptime.as_secs()),
        ),
    }
}

/// Health as the thresholds see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No verdict yet (in the start period, or not enough results).
    Starting,
    /// Enough consecutive successes.
    Healthy,
    /// Enough consecutive failures.
    Unhealthy,
    /// Not checked.
    None,
}

impl Health {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::None => "none",
        }
    }
}

/// Consecutive-result counting against a probe's thresholds.
#[derive(Clone, Debug)]
pub struct Tracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    successes: u32,
    failures: u32,
    /// The current verdict.
    pub health: Health,
}

impl Tracker {
    /// Starts in [`Health::Starting`].
    pub fn new(probe: &Probe) -> Self {
        Tracker {
            healthy_threshold: probe.healthy_threshold.max(1),
            unhealthy_threshold: probe.unhealthy_threshold.max(1),
            successes: 0,
            failures: 0,
            health: Health::Starting,
        }
    }

    /// Counts a result; returns the new health if it changed. Failures inside the start period
    /// do not count (`counts` false).
    pub fn record(&mut self, ok: bool, counts: bool) -> Option<Health> {
        let before = self.health;
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.healthy_threshold {
                self.health = Health::Healthy;
            }
        } else if counts {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.unhealthy_threshold {
                self.health = Health::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_spec::units::Duration as D;

    fn probe(healthy: u32, unhealthy: u32) -> Probe {
        Probe {
            check: ProbeCheck::Tcp,
            interval: D::from_secs(1),
            timeout: D::from_secs(1),
            start_period: D::from_secs(0),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Tracker::new(&probe(2, 3));
        assert_eq!(t.record(true, true), None);
        assert_eq!(t.record(true, true), Some(Health::Healthy));
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(true, true), None, "a success resets the failures");
        for _ in 0..2 {
            assert_eq!(t.record(false, true), None);
        }
        assert_eq!(t.record(false, true), Some(Health::Unhealthy));
        assert_eq!(t.record(false, false), None);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut t = Tracker::new(&probe(1, 1));
        assert_eq!(t.record(false, false), None);
        assert_eq!(t.health, Health::Starting);
    }
}
