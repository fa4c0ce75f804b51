//! Smoke checks: HTTP requests a release must answer right before it gets traffic (through the
//! preview route) and after (through its public route). Each check is tried up to `attempts`
//! times with a doubling backoff, all within one total timeout; the first check that never
//! passes fails the smoke test, with what it last saw.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use slipway_spec::pipeline::{SmokeCheck, SmokeWith};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Its name.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt saw.
    pub detail: String,
}

/// Smoke checks with their retry policy, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmokePlan {
    /// The web service checked.
    pub service: String,
    /// The checks.
    pub checks: Vec<SmokeCheck>,
    /// Attempts per check.
    pub attempts: u32,
    /// First backoff.
    pub backoff: Duration,
    /// Total time allowed.
    pub timeout: Duration,
}

impl SmokePlan {
    /// The plan of a `smoke` step's settings; `default_path` is the service's readiness path,
    /// checked when the step lists no checks.
    pub fn new(service: &str, with: &SmokeWith, default_path: &str) -> Self {
        let checks = if with.checks.is_empty() {
            vec![SmokeCheck {
                path: default_path.to_string(),
                ..Default::default()
            }]
        } else {
            with.checks.clone()
        };
        SmokePlan {
            service: service.to_string(),
            checks,
            attempts: with.attempts.unwrap_or(5).max(1),
            backoff: with.backoff.map_or(Duration::from_millis(500), |d| d.std()),
            timeout: with.timeout.map_or(Duration::from_secs(90), |d| d.std()),
        }
    }
}

fn check_name(c: &SmokeCheck) -> String {
    c.name.clone().unwrap_or_else(|| {
        format!(
            "{} {}",
            c.method.as_deref().unwrap_or("GET").to_uppercase(),
            c.path
        )
    })
}

/// What one attempt saw: `Ok(())` when the answer is right.
async fn attempt(
    client: &reqwest::Client,
    base: &str,
    c: &SmokeCheck,
    headers: &[(String, String)],
) -> Result<(), String> {
    let method = reqwest::Method::from_bytes(
        c.method
            .as_deref()
            .unwrap_or("GET")
            .to_uppercase()
            .as_bytes(),
    )
    .map_err(|_| {
        format!(
            "`{}` is not an HTTP method",
            c.method.as_deref().unwrap_or("")
        )
    })?;
    let mut req = client.request(method, format!("{base}{}", c.path));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    for (k, v) in &c.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(body) = &c.body {
        req = req.body(body.clone());
    }
    let res = req.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    let status_ok = match c.status {
        Some(s) => status.as_u16() == s,
        None => status.is_success(),
    };
    let snippet: String = body.chars().take(200).collect();
    if !status_ok {
        return Err(format!(
            "answered {status}{} (expected {})",
            if snippet.is_empty() {
                String::new()
            } else {
                format!(": {snippet}")
            },
            c.status.map_or("2xx".to_string(), |s| s.to_string())
        ));
    }
    if let Some(text) = &c.contains
        && !body.contains(text.as_str())
    {
        return Err(format!("the body does not contain {text:?}: {snippet}"));
    }
    if !c.json.is_empty() {
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("the body is not JSON ({e}): {snippet}"))?;
        for (pointer, want) in &c.json {
            let got = value.pointer(pointer);
            if got != Some(want) {
                return Err(format!(
                    "{pointer} is {} (expected {want})",
                    got.map_or("missing".to_string(), ToString::to_string)
                ));
            }
        }
    }
    Ok(())
}

/// Runs the checks against `base` (`http://127.0.0.1:PORT`), sending `headers` with each
/// request. `Err` carries every result when one failed.
pub async fn run(
    plan: &SmokePlan,
    base: &str,
    headers: &[(String, String)],
    cancel: &CancellationToken,
) -> Result<Vec<CheckResult>, Vec<CheckResult>> {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(vec![CheckResult {
                name: "client".into(),
                ok: false,
                attempts: 0,
                detail: e.to_string(),
            }]);
        }
    };
    let deadline = Instant::now() + plan.timeout;
    let mut results = Vec::new();
    for c in &plan.checks {
        let mut backoff = plan.backoff;
        let mut result = CheckResult {
            name: check_name(c),
            ok: false,
            attempts: 0,
            detail: String::new(),
        };
        loop {
            result.attempts += 1;
            let outcome = tokio::select! {
                r = tokio::time::timeout_at(deadline, attempt(&client, base, c, headers)) => r,
                _ = cancel.cancelled() => Ok(Err("cancelled".to_string())),
            };
            match outcome {
                Ok(Ok(())) => {
                    result.ok = true;
                    result.detail = "ok".into();
                    break;
                }
                Ok(Err(why)) => result.detail = why,
                Err(_) => {
                    result.detail = format!(
                        "{} (the smoke test's {}s were up)",
                        if result.detail.is_empty() {
                            "no answer".into()
                        } else {
                            result.detail.clone()
                        },
                        plan.timeout.as_secs()
                    );
                    break;
                }
            }
            if result.attempts >= plan.attempts
                || cancel.is_cancelled()
                || Instant::now() + backoff > deadline
            {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => {}
            }
            // Doubling up to 10s, or not at all from a first wait of 10s or more (seed 004's
            // "30 × 10s" health-check loop is `attempts = 30, backoff = "10s"`).
            backoff = (backoff * 2).min(plan.backoff.max(Duration::from_secs(10)));
        }
        let ok = result.ok;
        results.push(result);
        if !ok {
            return Err(results);
        }
    }
    Ok(results)
}

/// One line for a failed smoke test.
pub fn failure(results: &[CheckResult]) -> String {
    results.iter().find(|r| !r.ok).map_or_else(
        || "the smoke test failed".to_string(),
        |r| {
            format!(
                "smoke check `{}` failed after {} attempt(s): {}",
                r.name, r.attempts, r.detail
            )
        },
    )
}
