//! Service level objectives as Slipway measures them: each `[slos.NAME]` becomes an error
//! ratio in PromQL that any window can be put into (the proxy's requests for availability
//! and latency, the health checks, or the user's own good/bad and total events), recording
//! rules that keep that ratio over every window the alerts need and over the SLO's own
//! window, and the multiwindow multi-burn-rate alerts of the SRE Workbook (as Sloth
//! generates them) as ordinary alert rules. [`prometheus_rules`] writes the same as a
//! Prometheus rule file, for those who run Prometheus themselves.
//!
//! Every series carries `slo="NAME"` and keeps the `environment` label of what it measures,
//! so each environment has its own budget.

pub mod import;

use std::collections::BTreeSet;
use std::time::Duration;

use indexmap::IndexMap;
use slipway_spec::model::{self, BurnAlert, Indicator, Severity};

/// The series an error ratio over `window` is recorded as: `slo:sli_error:ratio_rate5m`.
pub fn ratio_series(window: Duration) -> String {
    format!("slo:sli_error:ratio_rate{}", compact(window))
}

/// A duration as PromQL writes it (`5m`, `1h`, `30d`, `90s`).
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s > 0 && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    if s > 0 && d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A pair of burn-rate windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Burn {
    /// The long window.
    pub long: Duration,
    /// The short window.
    pub short: Duration,
    /// The burn factor.
    pub factor: f64,
    /// Page or ticket.
    pub alert: BurnAlert,
}

/// The SRE Workbook's windows for a 30-day SLO, with Sloth's 1d/2h ticket.
pub fn default_burns() -> Vec<Burn> {
    let h = |n: u64| Duration::from_secs(n * 3600);
    let m = |n: u64| Duration::from_secs(n * 60);
    vec![
        Burn {
            long: h(1),
            short: m(5),
            factor: 14.4,
            alert: BurnAlert::Page,
        },
        Burn {
            long: h(6),
            short: m(30),
            factor: 6.0,
            alert: BurnAlert::Page,
        },
        Burn {
            long: h(24),
            short: h(2),
            factor: 3.0,
            alert: BurnAlert::Ticket,
        },
        Burn {
            long: h(72),
            short: h(6),
            factor: 1.0,
            alert: BurnAlert::Ticket,
        },
    ]
}

/// An SLO, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// Its name.
    pub name: String,
    /// The service measured, if it is one.
    pub service: Option<String>,
    /// The target share of good events (`0.999`).
    pub objective: f64,
    /// The objective as written (`99.9%`).
    pub objective_text: String,
    /// The window the objective holds over.
    pub window: Duration,
    /// The error ratio with `{{.window}}` where the range goes.
    pub error_ratio: String,
    /// Its burn-rate windows.
    pub burns: Vec<Burn>,
    /// Page alerts' severity.
    pub page_severity: Severity,
    /// Ticket alerts' severity.
    pub ticket_severity: Severity,
    /// Where its alerts go (empty: as any alert).
    pub channels: Vec<String>,
    /// Whether a spent budget freezes deploys.
    pub freeze_deploys: bool,
    /// The share of the budget that must be back for a freeze to lift.
    pub unfreeze_above: f64,
    /// What it promises.
    pub description: Option<String>,
}

const WINDOW: &str = "{{.window}}";

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Slo {
    /// The SLO `[slos.NAME]` asks for (the file was validated: what it could not read is
    /// an error here too).
    pub fn from_spec(name: &str, s: &model::Slo) -> Result<Slo, String> {
        let svc = s.service.as_deref().map(escape);
        let need_service = || {
            svc.clone()
                .ok_or_else(|| format!("SLO `{name}` measures no service"))
        };
        // Bad over total, per environment; no bad series yet is 0, not "no data".
        let events = |bad: String, total: String| {
            format!(
                "(sum by (environment) ({bad}) or (0 * sum by (environment) ({total}))) / sum by (environment) ({total})"
            )
        };
        let error_ratio = match s.indicator.unwrap_or_default() {
            Indicator::Availability => {
                let svc = need_service()?;
                events(
                    format!(
                        "rate(slipway_proxy_requests_total{{service=\"{svc}\",code=\"5xx\"}}[{WINDOW}])"
                    ),
                    format!("rate(slipway_proxy_requests_total{{service=\"{svc}\"}}[{WINDOW}])"),
                )
            }
            Indicator::Latency => {
                let svc = need_service()?;
                let threshold = s
                    .latency
                    .ok_or_else(|| format!("latency SLO `{name}` has no `latency` threshold"))?;
                let bound =
                    slipway_spec::slo_buckets::at_most(threshold.std()).ok_or_else(|| {
                        format!(
                            "SLO `{name}`: {threshold} is under the proxy's smallest latency bucket"
                        )
                    })?;
                let le = slipway_spec::slo_buckets::le(bound);
                format!(
                    "1 - (sum by (environment) (rate(slipway_proxy_request_duration_seconds_bucket{{service=\"{svc}\",le=\"{le}\"}}[{WINDOW}])) / sum by (environment) (rate(slipway_proxy_request_duration_seconds_count{{service=\"{svc}\"}}[{WINDOW}])))"
                )
            }
            Indicator::Health => {
                let svc = need_service()?;
                format!(
                    "1 - avg by (environment) (avg_over_time(slipway_instance_healthy{{service=\"{svc}\"}}[{WINDOW}]))"
                )
            }
            Indicator::Ratio => {
                let total = s
                    .total
                    .clone()
                    .ok_or_else(|| format!("ratio SLO `{name}` has no `total`"))?;
                match (&s.good, &s.bad) {
                    (Some(good), None) => format!("1 - (({good}) / ({total}))"),
                    (None, Some(bad)) => format!("({bad}) / ({total})"),
                    _ => return Err(format!("ratio SLO `{name}` needs one of `good` or `bad`")),
                }
            }
        };
        let burns = match &s.burn {
            None => default_burns(),
            Some(b) => b
                .iter()
                .map(|b| Burn {
                    long: b.long.std(),
                    short: b.short.std(),
                    factor: b.factor,
                    alert: b.alert,
                })
                .collect(),
        };
        Ok(Slo {
            name: name.to_string(),
            service: s.service.clone(),
            objective: s.objective.percent() / 100.0,
            objective_text: s.objective.to_string(),
            window: s
                .window
                .map_or(Duration::from_secs(30 * 86_400), |w| w.std()),
            error_ratio,
            burns,
            page_severity: s.page_severity.unwrap_or(Severity::P1),
            ticket_severity: s.ticket_severity.unwrap_or(Severity::P3),
            channels: s.channels.clone(),
            freeze_deploys: s.freeze_deploys.unwrap_or(true),
            unfreeze_above: s.unfreeze_above.map_or(0.05, |p| p.percent() / 100.0),
            description: s.description.clone(),
        })
    }

    /// Every SLO of a configuration, and what could not be read.
    pub fn all(config: &model::Config) -> (Vec<Slo>, Vec<String>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (name, s) in &config.slos {
            match Slo::from_spec(name, s) {
                Ok(slo) => out.push(slo),
                Err(e) => problems.push(e),
            }
        }
        (out, problems)
    }

    /// The error budget: the share of events allowed to be bad (`0.001`).
    pub fn budget(&self) -> f64 {
        // Rounded, so 99.9% is 0.001 and not 0.0010000000000000009.
        ((1.0 - self.objective) * 1e9).round() / 1e9
    }

    /// The error ratio over `window`, in PromQL.
    pub fn error_ratio_over(&self, window: Duration) -> String {
        self.error_ratio.replace(WINDOW, &compact(window))
    }

    /// Every window a ratio is recorded over: the burn windows and the SLO's own.
    pub fn windows(&self) -> BTreeSet<Duration> {
        let mut w: BTreeSet<Duration> = self.burns.iter().flat_map(|b| [b.long, b.short]).collect();
        w.insert(self.window);
        w
    }

    /// The recording rules: the error ratio over each window, as [`ratio_series`] with
    /// `slo="NAME"`.
    pub fn recording_rules(&self) -> Vec<model::RecordingRule> {
        self.windows()
            .into_iter()
            .map(|w| model::RecordingRule {
                record: ratio_series(w),
                expr: self.error_ratio_over(w),
                labels: IndexMap::from([("slo".to_string(), self.name.clone())]),
                interval: None,
            })
            .collect()
    }

    /// The name of its page or ticket alert (`slo_checkout_availability_page`).
    pub fn alert_name(&self, alert: BurnAlert) -> String {
        let base: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!(
            "slo_{base}_{}",
            match alert {
                BurnAlert::Page => "page",
                BurnAlert::Ticket => "ticket",
            }
        )
    }

    /// The burn-rate alerts: for each of page and ticket, the rule firing while any of its
    /// window pairs burns faster than its factor over both windows; the value is the long
    /// window's burn rate.
    pub fn alert_rules(&self) -> Vec<(String, model::Alert)> {
        let budget = self.budget();
        let mut out = Vec::new();
        for (kind, severity) in [
            (BurnAlert::Page, self.page_severity),
            (BurnAlert::Ticket, self.ticket_severity),
        ] {
            let pairs: Vec<String> = self
                .burns
                .iter()
                .filter(|b| b.alert == kind)
                .map(|b| {
                    let over = |w: Duration| {
                        format!(
                            "{}{{slo=\"{}\"}} / {budget} > {}",
                            ratio_series(w),
                            escape(&self.name),
                            b.factor
                        )
                    };
                    format!("({} and {})", over(b.long), over(b.short))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let what = match kind {
                BurnAlert::Page => "burns its error budget fast",
                BurnAlert::Ticket => "burns its error budget",
            };
            let alert = model::Alert {
                expr: pairs.join(" or "),
                severity: Some(severity),
                channels: self.channels.clone(),
                summary: Some(format!(
                    "SLO {} ({{{{ $labels.environment }}}}) {what}: {{{{ $value | printf \"%.1f\" }}}}× the sustainable rate",
                    self.name
                )),
                description: Some(format!(
                    "{}objective {} over {}; `slipway slo` shows the budget left",
                    self.description
                        .as_deref()
                        .map(|d| format!("{d}; "))
                        .unwrap_or_default(),
                    self.objective_text,
                    compact(self.window)
                )),
                labels: IndexMap::from([("slo".to_string(), self.name.clone())]),
                ..Default::default()
            };
            out.push((self.alert_name(kind), alert));
        }
        out
    }
}

/// The SLOs as one Prometheus rule file (YAML): a recording group and an alerting group per
/// SLO, as `promtool check rules` accepts them.
pub fn prometheus_rules(slos: &[Slo]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out = String::from("groups:\n");
    for slo in slos {
        out.push_str(&format!(
            "  - name: {}\n    rules:\n",
            q(&format!("slo-{}-recordings", slo.name))
        ));
        for r in slo.recording_rules() {
            out.push_str(&format!(
                "      - record: {}\n        expr: {}\n        labels:\n",
                r.record,
                q(&r.expr)
            ));
            for (k, v) in &r.labels {
                out.push_str(&format!("          {k}: {}\n", q(v)));
            }
        }
        out.push_str(&format!(
            "  - name: {}\n    rules:\n",
            q(&format!("slo-{}-alerts", slo.name))
        ));
        for (name, a) in slo.alert_rules() {
            out.push_str(&format!(
                "      - alert: {name}\n        expr: {}\n        labels:\n",
                q(&a.expr)
            ));
            out.push_str(&format!(
                "          severity: {}\n",
                a.severity.unwrap_or_default().as_str()
            ));
            for (k, v) in &a.labels {
                out.push_str(&format!("          {k}: {}\n", q(v)));
            }
            out.push_str("        annotations:\n");
            for (k, v) in [("summary", &a.summary), ("description", &a.description)] {
                if let Some(v) = v {
                    out.push_str(&format!("          {k}: {}\n", q(v)));
                }
            }
        }
    }
    out
}
