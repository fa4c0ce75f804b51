//! `slipway alerts` and `slipway silence`: what fires and waits, the rules, the deliveries,
//! the history, acknowledgements and silences. Tables for people, the API's JSON with
//! `--json`.

use slipway_api::{AckBody, AlertHistoryView, AlertsView, SilenceBody, SilenceView};

use crate::Context;
use crate::args::{AlertsCommand, SilenceCommand};
use crate::client::Client;
use crate::error::CliError;
use crate::output;

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter()
        .filter(|(k, _)| *k != "alertname" && *k != "severity")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn short(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .map_or_else(|_| t.to_string(), output::time)
}

pub(crate) async fn alerts(ctx: &Context, cmd: Option<AlertsCommand>) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    match cmd {
        None => {
            let view: AlertsView = client.get("/v1/alerts").await?;
            if ctx.json {
                output::json(&view);
                return Ok(0);
            }
            for p in &view.problems {
                eprintln!("warning: {p}");
            }
            if view.alerts.is_empty() {
                println!(
                    "nothing fires or waits ({} rule{} evaluated every second)",
                    view.rules.len(),
                    if view.rules.len() == 1 { "" } else { "s" }
                );
            } else {
                let mut t = output::table([
                    "ALERT", "STATE", "SEVERITY", "LABELS", "VALUE", "SINCE", "ACK",
                ]);
                for a in &view.alerts {
                    let state = if a.holding {
                        format!("{} (holding)", a.state)
                    } else {
                        a.state.clone()
                    };
                    t.add_row([
                        a.rule.clone(),
                        state,
                        a.severity.clone(),
                        labels(&a.labels),
                        a.value.map_or("-".into(), |v| format!("{v}")),
                        short(a.fired_at.as_deref().unwrap_or(&a.since)),
                        output::or_dash(a.acknowledged_by.clone()),
                    ]);
                }
                println!("{t}");
            }
            for c in &view.failing_channels {
                println!(
                    "channel {} fails since {}: {}",
                    c.channel,
                    short(&c.since),
                    c.error
                );
            }
            let failing: Vec<_> = view.rules.iter().filter(|r| r.error.is_some()).collect();
            for r in failing {
                println!(
                    "rule {} ({}) fails: {}",
                    r.name,
                    r.source,
                    r.error.as_deref().unwrap_or_default()
                );
            }
            if !view.deliveries.is_empty() {
                println!();
                let mut t = output::table([
                    "NOTIFICATION",
                    "CHANNEL",
                    "STATUS",
                    "REASON",
                    "SENT",
                    "TRIES",
                    "ERROR",
                ]);
                for d in view.deliveries.iter().take(10) {
                    t.add_row([
                        d.key.clone(),
                        d.channel.clone(),
                        d.status.clone(),
                        d.reason.clone(),
                        d.sent
                            .as_deref()
                            .map_or_else(|| "waiting".to_string(), short),
                        d.attempts.to_string(),
                        output::or_dash(d.last_error.clone()),
                    ]);
                }
                println!("{t}");
            }
            if !view.silences.is_empty() {
                println!(
                    "\n{} active silence(s): `slipway silence list`",
                    view.silences.len()
                );
            }
            Ok(0)
        }
        Some(AlertsCommand::History { rule, limit }) => {
            let mut path = format!("/v1/alerts/history?limit={limit}");
            if let Some(r) = &rule {
                path.push_str(&format!(
                    "&rule={}",
                    form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>()
                ));
            }
            let rows: Vec<AlertHistoryView> = client.get(&path).await?;
            if ctx.json {
                output::json(&rows);
                return Ok(0);
            }
            if rows.is_empty() {
                println!("no alert has fired yet");
                return Ok(0);
            }
            let mut t = output::table([
                "TIME", "ALERT", "EVENT", "SEVERITY", "LABELS", "VALUE", "BY",
            ]);
            for r in &rows {
                let pairs: std::collections::BTreeMap<String, String> = r
                    .labels
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                t.add_row([
                    short(&r.time),
                    r.rule.clone(),
                    r.status.clone(),
                    r.severity.clone(),
                    labels(&pairs),
                    r.value.map_or("-".into(), |v| format!("{v}")),
                    output::or_dash(r.actor.clone()),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        Some(AlertsCommand::Test { channel }) => {
            let r: serde_json::Value = client
                .post(
                    "/v1/alerts/test",
                    &slipway_api::TestBody {
                        channel: channel.clone(),
                    },
                )
                .await?;
            if ctx.json {
                output::json(&r);
            } else {
                println!("a test notification went to `{channel}`");
            }
            Ok(0)
        }
        Some(AlertsCommand::Ack { matchers }) => {
            let r: serde_json::Value = client.post("/v1/alerts/ack", &AckBody { matchers }).await?;
            if ctx.json {
                output::json(&r);
            } else {
                println!(
                    "acknowledged {} group(s): no repeats until they resolve",
                    r["acknowledged"]
                );
            }
            Ok(0)
        }
    }
}

pub(crate) async fn silence(ctx: &Context, cmd: SilenceCommand) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    match cmd {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            comment,
        } => {
            let s: SilenceView = client
                .post(
                    "/v1/silences",
                    &SilenceBody {
                        matchers,
                        duration,
                        starts_at: start,
                        comment,
                    },
                )
                .await?;
            if ctx.json {
                output::json(&s);
            } else {
                println!(
                    "silence {} mutes {} from {} until {}",
                    s.id,
                    s.matchers.join(", "),
                    short(&s.starts_at),
                    short(&s.ends_at)
                );
            }
            Ok(0)
        }
        SilenceCommand::List => {
            let list: Vec<SilenceView> = client.get("/v1/silences").await?;
            if ctx.json {
                output::json(&list);
                return Ok(0);
            }
            if list.is_empty() {
                println!("no active silence");
                return Ok(0);
            }
            let mut t = output::table(["ID", "MATCHERS", "UNTIL", "BY", "COMMENT"]);
            for s in &list {
                t.add_row([
                    s.id.clone(),
                    s.matchers.join(", "),
                    short(&s.ends_at),
                    s.created_by.clone(),
                    s.comment.clone(),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        SilenceCommand::Expire { id } => {
            client.delete(&format!("/v1/silences/{id}")).await?;
            if !ctx.json {
                println!("silence {id} ended");
            }
            Ok(0)
        }
    }
}
