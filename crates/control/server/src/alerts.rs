//! The control plane's alerting: the rules of `[alerts.NAME]` and of the `[metrics]
//! rule_files`, the channels of `[channels.NAME]` (endpoint URLs and keys from the secrets
//! they name, taken from the environment of `slipway up`, never logged), and a loop that
//! evaluates every rule each second against the metrics back-end and works the outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use slipway_alerts::email::{Email, Security, Smtp};
use slipway_alerts::engine::{Alerting, CHANNEL_FAILING, Channel, ChannelHealth, Pacer};
use slipway_alerts::notify::{
    Alertmanager, Change, Endpoint, Notifier, PagerDuty, Slack, Telegram, Webhook,
};
use slipway_alerts::route::Routing;
use slipway_alerts::rule::Rule;
use slipway_alerts::slack::SlackApp;
use slipway_spec::Project;
use slipway_spec::model::{ChannelKind, SmtpTls, smtp_address};
use slipway_store::Store;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// See the module docs.
pub(crate) struct Alerts {
    pub(crate) engine: Mutex<Alerting>,
    /// Why some rules or channels could not be built (shown by `slipway alerts`).
    pub(crate) problems: std::sync::Mutex<Vec<String>>,
    /// Which channels are failing, since when and why.
    pub(crate) health: std::sync::Mutex<ChannelHealth>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Slipway's own rules, on its own series (`[alerting] builtin = false` turns them off; a
/// rule of the file with the same name replaces one).
const BUILTIN: [(&str, &str); 7] = [
    (
        "slipway_crash_looping",
        r#"expr = 'increase(slipway_service_restarts_total[10m]) > 3'
severity = "P2"
summary = "{{ $labels.service }} ({{ $labels.environment }}) restarted {{ $value }} times in 10 minutes"
description = "`slipway logs {{ $labels.service }}` shows why it exits"
"#,
    ),
    (
        "slipway_instance_down",
        r#"expr = 'slipway_instance_up == 0'
for = "1m"
severity = "P2"
summary = "instance {{ $labels.instance }} of {{ $labels.service }} ({{ $labels.environment }}) has been down for a minute"
"#,
    ),
    (
        "slipway_health_check_failing",
        r#"expr = 'slipway_instance_healthy == 0 and on (instance) slipway_instance_up == 1'
for = "2m"
severity = "P2"
summary = "instance {{ $labels.instance }} of {{ $labels.service }} ({{ $labels.environment }}) has failed its health checks for 2 minutes"
description = "`slipway status` shows its checks; `slipway logs {{ $labels.service }}` its output"
"#,
    ),
    (
        "slipway_pipeline_failing",
        r#"expr = 'slipway_pipeline_last_run_success == 0'
severity = "P3"
summary = "the last pipeline run of {{ $labels.ref }} for {{ $labels.environment }} failed"
description = "`slipway pipeline status` shows the step that failed"
"#,
    ),
    (
        "slipway_deploy_rolled_back",
        r#"expr = 'increase(slipway_deployments_total{outcome="rolled_back"}[10m]) > 0'
severity = "P3"
summary = "a deploy to {{ $labels.environment }} was rolled back"
description = "`slipway deployments` says why"
"#,
    ),
    (
        "slipway_cron_failed",
        r#"expr = 'slipway_cron_last_run_success == 0'
severity = "P3"
summary = "the last run of {{ $labels.service }} ({{ $labels.environment }}) failed"
description = "`slipway status` has its history; `slipway logs {{ $labels.service }}` its output"
"#,
    ),
    (
        CHANNEL_FAILING,
        r#"expr = 'slipway_notification_channel_failing_seconds > 120'
severity = "P2"
summary = "channel {{ $labels.channel }} has failed to deliver for {{ $value | humanizeDuration }}"
description = "`slipway alerts` shows its last error; what it has not delivered waits in the outbox"
"#,
    ),
];

/// The built-in rules as rules.
fn builtin_rules() -> Vec<Rule> {
    BUILTIN
        .iter()
        .filter_map(|(name, text)| {
            let alert: slipway_spec::model::Alert = toml::from_str(text).ok()?;
            let mut rule = Rule::from_spec(name, &alert).ok()?;
            rule.source = "built in ([alerting] builtin = false turns it off)".into();
            Some(rule)
        })
        .collect()
}

/// The rules and channels of a project, and what could not be built.
fn build(
    project: &Project,
    store: &Arc<dyn Store>,
) -> (Vec<Rule>, HashMap<String, Channel>, Vec<String>) {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    if project.config.alerting.builtin != Some(false) {
        rules.extend(
            builtin_rules()
                .into_iter()
                .filter(|r| !project.config.alerts.contains_key(&r.name)),
        );
    }
    for (name, alert) in &project.config.alerts {
        match Rule::from_spec(name, alert) {
            Ok(r) => rules.push(r),
            Err(e) => problems.push(e.to_string()),
        }
    }
    // Each SLO's burn-rate alerts, on the error ratios its recording rules keep.
    let (slos, slo_problems) = slipway_slo::Slo::all(&project.config);
    problems.extend(slo_problems);
    for slo in &slos {
        for (name, alert) in slo.alert_rules() {
            match Rule::from_spec(&name, &alert) {
                Ok(mut r) => {
                    r.source = format!("SLO {}", slo.name);
                    rules.push(r);
                }
                Err(e) => problems.push(format!("SLO {}: {e}", slo.name)),
            }
        }
    }
    for file in &project.rule_files {
        match Rule::from_rule_file(file) {
            Ok(r) => rules.extend(r),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut channels = HashMap::new();
    for (name, c) in &project.config.channels {
        let secret = c.secret.as_ref().and_then(|s| std::env::var(s).ok());
        if let (Some(s), None) = (&c.secret, &secret) {
            problems.push(format!(
                "channel `{name}`: the secret `{s}` is not set in the environment of `slipway up`"
            ));
        }
        // Where the channel's own URL is the secret (a Slack webhook URL), the secret is it;
        // where the service has a fixed API, the secret is the key.
        let url_or_secret = c.url.clone().or_else(|| secret.clone());
        let notifier: Arc<dyn Notifier> = match c.kind {
            ChannelKind::Slack if c.chat.is_some() => Arc::new(SlackApp::new(
                Endpoint {
                    url: c
                        .url
                        .clone()
                        .unwrap_or_else(|| "https://slack.com/api".into()),
                    key: secret,
                    chat: c.chat.clone(),
                },
                store.clone(),
            )),
            ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Alertmanager => {
                let Some(url) = url_or_secret else {
                    problems.push(format!("channel `{name}` has no URL"));
                    continue;
                };
                let e = Endpoint {
                    url,
                    key: None,
                    chat: None,
                };
                match c.kind {
                    ChannelKind::Slack => Arc::new(Slack::new(e)),
                    ChannelKind::Alertmanager => Arc::new(Alertmanager::new(e)),
                    _ => Arc::new(Webhook::new(e)),
                }
            }
            ChannelKind::Pagerduty => Arc::new(PagerDuty::new(Endpoint {
                url: c
                    .url
                    .clone()
                    .unwrap_or_else(|| "https://events.pagerduty.com".into()),
                key: secret,
                chat: None,
            })),
            ChannelKind::Telegram => Arc::new(Telegram::new(Endpoint {
                url: c
                    .url
                    .clone()
                    .unwrap_or_else(|| "https://api.telegram.org".into()),
                key: secret,
                chat: c.chat.clone(),
            })),
            ChannelKind::Email => {
                let Some((host, port)) = c.smtp.as_deref().and_then(smtp_address) else {
                    problems.push(format!("channel `{name}` has no SMTP server"));
                    continue;
                };
                let security = match c.tls {
                    Some(SmtpTls::None) => Security::None,
                    Some(SmtpTls::Tls) => Security::Tls,
                    Some(SmtpTls::Starttls) => Security::StartTls,
                    None if port == 465 => Security::Tls,
                    None => Security::StartTls,
                };
                let mut extra_roots = Vec::new();
                if let Some(ca) = &c.ca {
                    match std::fs::read_to_string(project.dir.join(ca)) {
                        Ok(pem) => extra_roots.push(pem),
                        Err(e) => {
                            problems.push(format!(
                                "channel `{name}`: the CA file `{ca}` cannot be read: {e}"
                            ));
                            continue;
                        }
                    }
                }
                let smtp = Smtp {
                    host: host.to_string(),
                    port,
                    security,
                    user: c.user.clone(),
                    password: secret,
                    from: c.from.clone().unwrap_or_else(default_sender),
                    to: c.to.clone(),
                    extra_roots,
                };
                match Email::new(smtp) {
                    Ok(e) => Arc::new(e),
                    Err(e) => {
                        problems.push(format!("channel `{name}`: {e}"));
                        continue;
                    }
                }
            }
        };
        channels.insert(
            name.clone(),
            Channel {
                notifier,
                severities: c.severities.clone().unwrap_or_default(),
            },
        );
    }
    (rules, channels, problems)
}

/// `slipway@HOST`, the sender of email channels that name none.
fn default_sender() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".into());
    format!("slipway@{host}")
}

impl Alerts {
    /// Opens the engine (its state from the store) and starts the loop.
    pub(crate) async fn start(
        project: &Project,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        external_url: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Alerts>, slipway_store::StoreError> {
        let (rules, channels, mut problems) = build(project, &store);
        let routing = Routing::from_spec(&project.config.alerting, &mut problems);
        for p in &problems {
            tracing::warn!("{p}");
        }
        let mut engine = Alerting::open(rules, channels, store.clone(), external_url).await?;
        engine.set_routing(routing);
        let alerts = Arc::new(Alerts {
            engine: Mutex::new(engine),
            problems: std::sync::Mutex::new(problems),
            health: std::sync::Mutex::new(ChannelHealth::default()),
        });
        alerts.spawn_changes(store.clone(), external_url, shutdown.clone());
        let this = alerts.clone();
        tokio::spawn(async move {
            let mut pacer = Pacer::default();
            let mut scraped = metrics.scraper.subscribe();
            let mut scrapes_live = true;
            let mut health_written = 0i64;
            let mut last = tokio::time::Instant::now();
            loop {
                // Every second, and also as soon as a scrape stores samples or a pending
                // alert's `for` runs out (no more often than every 200 ms): a condition that
                // becomes true fires a tick sooner than on a fixed beat.
                let due = this.engine.lock().await.next_due();
                let mut wake = last + Duration::from_secs(1);
                // (One already due was just evaluated; if it still waits, the beat retries.)
                if let Some(wait) = due.and_then(|d| u64::try_from(d - now_ms()).ok()) {
                    wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(wait));
                }
                let new_samples = async {
                    if scrapes_live {
                        scraped.changed().await.is_ok()
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    // The scraper gone: the beat alone.
                    live = new_samples => scrapes_live = live,
                    _ = shutdown.cancelled() => break,
                }
                tokio::time::sleep_until(last + Duration::from_millis(200)).await;
                last = tokio::time::Instant::now();
                let backend = metrics.backend();
                let (store, senders) = {
                    let mut engine = this.engine.lock().await;
                    if let Err(e) = engine.evaluate(backend.as_ref(), now_ms()).await {
                        tracing::error!(error = %e, "cannot save the alerting state");
                    }
                    (engine.store(), engine.senders())
                };
                // Sent without holding the engine: the API reads it meanwhile.
                let now = now_ms();
                match slipway_alerts::engine::deliver(store.as_ref(), &senders, &mut pacer, now)
                    .await
                {
                    Ok(report) => {
                        let mut health = this.health.lock().map(|h| h.clone()).unwrap_or_default();
                        health.failing.retain(|c, _| senders.contains_key(c));
                        health.record(&report, now);
                        // How long each channel has failed, for `slipway_channel_failing`,
                        // every five seconds (the loop runs more often).
                        if now - health_written >= 5_000 {
                            health_written = now;
                            let batch: Vec<_> = senders
                                .keys()
                                .map(|c| {
                                    (
                                        crate::metrics::labels(
                                            "slipway_notification_channel_failing_seconds",
                                            [("channel", c.as_str())],
                                        ),
                                        now,
                                        health.failing_seconds(c, now),
                                    )
                                })
                                .collect();
                            let db = metrics.tsdb.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || db.append_batch(&batch)).await;
                        }
                        if let Ok(mut h) = this.health.lock() {
                            *h = health;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot work the notification outbox"),
                }
            }
        });
        Ok(alerts)
    }

    /// Deploys that finished, told to the channels that relate changes to incidents
    /// (PagerDuty's change events): best effort, three tries, never holding the outbox.
    fn spawn_changes(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        external_url: &str,
        shutdown: CancellationToken,
    ) {
        let this = self.clone();
        let link = format!("{}/v1/deployments", external_url.trim_end_matches('/'));
        let mut events = store.subscribe_events();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = shutdown.cancelled() => break,
                };
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                if !matches!(
                    event.kind.as_str(),
                    "deploy.succeeded" | "deploy.rolled_back" | "deploy.failed"
                ) {
                    continue;
                }
                let change = Change {
                    summary: event.message.clone(),
                    source: event
                        .environment
                        .clone()
                        .unwrap_or_else(|| "slipway".into()),
                    at: event.time.as_millisecond(),
                    details: serde_json::json!({
                        "outcome": event.kind.trim_start_matches("deploy."),
                        "deployment": event.subject,
                        "data": event.data,
                    }),
                    link: Some(link.clone()),
                };
                let senders = this.engine.lock().await.senders();
                for (name, sender) in senders {
                    for attempt in 0..3u32 {
                        match sender.change(&change).await {
                            Ok(()) => break,
                            Err(e) if e.retryable && attempt < 2 => {
                                tokio::time::sleep(Duration::from_secs(2 << attempt)).await;
                            }
                            Err(e) => {
                                tracing::warn!(channel = %name, error = %e, "cannot tell a deploy");
                                break;
                            }
                        }
                    }
                }
            }
        });
    }

    /// Takes the project's rules and channels again (an apply).
    pub(crate) async fn reconfigure(&self, project: &Project) {
        let mut engine = self.engine.lock().await;
        let (rules, channels, mut problems) = build(project, &engine.store());
        let routing = Routing::from_spec(&project.config.alerting, &mut problems);
        for p in &problems {
            tracing::warn!("{p}");
        }
        engine.reconfigure(rules, channels);
        engine.set_routing(routing);
        if let Ok(mut p) = self.problems.lock() {
            *p = problems;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_rule_builds() {
        assert_eq!(super::builtin_rules().len(), super::BUILTIN.len());
    }
}
