//! Read commands against the running control plane: `status`, `events`, `audit`, and
//! `annotate`, which writes a note to the event log.

use futures_util::StreamExt as _;
use slipway_api::{AnnotationRequest, AuditEntry, Event, StatusReport};

use crate::Context;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub(crate) async fn status(ctx: &Context) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let path = match &ctx.env {
        Some(env) => format!("/v1/status?env={env}"),
        None => "/v1/status".to_string(),
    };
    let report: StatusReport = client.get(&path).await?;
    if ctx.json {
        output::json(&report);
        return Ok(0);
    }
    println!(
        "{} · {} · release {} · configuration generation {} · control plane pid {} on {}",
        report.project,
        report.environment,
        report
            .release
            .as_ref()
            .map_or("none".to_string(), |r| format!("{} ({})", r.id, r.version)),
        output::or_dash(report.generation),
        report.control.pid,
        report.control.listen,
    );
    let mut services = output::table(["SERVICE", "KIND", "PORT", "READY", "TRAFFIC"]);
    for s in &report.services {
        let ready = s.instances.iter().filter(|i| i.health == "healthy").count();
        let traffic = if s.traffic.is_empty() {
            "-".to_string()
        } else {
            s.traffic
                .iter()
                .map(|t| format!("{} {} {}%", t.release, t.track, t.weight))
                .collect::<Vec<_>>()
                .join(", ")
        };
        services.add_row([
            s.name.clone(),
            s.kind.clone(),
            output::or_dash(s.port),
            format!("{ready}/{}", s.replicas),
            traffic,
        ]);
    }
    println!("{services}");
    let instances: Vec<_> = report
        .services
        .iter()
        .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
        .collect();
    if !instances.is_empty() {
        let mut table = output::table([
            "INSTANCE", "SERVICE", "PID", "PORT", "RELEASE", "STATE", "HEALTH",
        ]);
        for (s, i) in instances {
            table.add_row([
                i.id.clone(),
                s.name.clone(),
                output::or_dash(i.pid),
                output::or_dash(i.port),
                i.release.clone(),
                i.state.clone(),
                i.health.clone(),
            ]);
        }
        println!("\n{table}");
    }
    Ok(0)
}

fn print_event(ctx: &Context, event: &Event) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(event).expect("events serialize")
        );
    } else {
        println!(
            "{:>6}  {}  {:<7}  {:<18}  {:<10}  {}",
            event.id,
            output::time(event.time),
            serde_json::to_value(event.level)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            event.kind,
            event.environment.as_deref().unwrap_or("-"),
            event.message
        );
    }
}

pub(crate) async fn events(ctx: &Context, follow: bool, limit: u32) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let env = ctx
        .env
        .as_ref()
        .map_or_else(String::new, |e| format!("&env={e}"));
    let events: Vec<Event> = client
        .get(&format!("/v1/events?limit={limit}{env}"))
        .await?;
    if ctx.json && !follow {
        output::json(&events);
        return Ok(0);
    }
    for e in &events {
        print_event(ctx, e);
    }
    if !follow {
        return Ok(0);
    }
    let mut last = events.last().map(|e| e.id);
    if last.is_none() {
        // Nothing yet: follow from the start of the log.
        last = Some(0);
    }
    let response = client
        .stream(&format!(
            "/v1/events/stream?after={}{env}",
            last.unwrap_or(0)
        ))
        .await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut data = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CliError::from_error("the event stream broke", &e))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(event) = serde_json::from_str::<Event>(&data) {
                    print_event(ctx, &event);
                }
                data.clear();
            }
        }
    }
    // The stream ends when the control plane stops.
    eprintln!("the control plane closed the event stream");
    Ok(0)
}

pub(crate) async fn audit(ctx: &Context, limit: u32) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let entries: Vec<AuditEntry> = client.get(&format!("/v1/audit?limit={limit}")).await?;
    if ctx.json {
        output::json(&entries);
        return Ok(0);
    }
    let mut table = output::table(["ID", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]);
    for a in entries {
        table.add_row([
            a.id.to_string(),
            output::time(a.time),
            a.actor,
            a.action,
            a.target,
            a.outcome,
        ]);
    }
    println!("{table}");
    Ok(0)
}

pub(crate) async fn annotate(ctx: &Context, message: String) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let event: Event = client
        .post(
            "/v1/annotations",
            &AnnotationRequest {
                message,
                environment: ctx.env.clone(),
            },
        )
        .await?;
    if ctx.json {
        output::json(&event);
    } else {
        println!("annotation {} recorded", event.id);
    }
    Ok(0)
}
