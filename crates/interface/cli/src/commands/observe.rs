//! Read commands against the running control plane: `status`, `events`, `audit`, and
//! `annotate`, which writes a note to the event log.

use futures_util::StreamExt as _;
use slipway_api::{AnnotationRequest, AuditEntry, Event, LogLine, RunStarted, StatusReport};

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
    let mut services = output::table([
        "SERVICE",
        "KIND",
        "STATE",
        "PORT",
        "READY",
        "RESTARTS",
        "TRAFFIC",
        "LAST EXIT",
    ]);
    for s in &report.services {
        let traffic = if s.traffic.is_empty() {
            "-".to_string()
        } else {
            s.traffic
                .iter()
                .map(|t| format!("{} {} {}%", t.release, t.track, t.weight))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ready = if s.kind == "cron" {
            s.next_run.map_or("-".to_string(), |t| {
                format!("next {}", t.strftime("%H:%M:%S"))
            })
        } else {
            ready_column(s)
        };
        services.add_row([
            s.name.clone(),
            s.kind.clone(),
            s.state.clone(),
            output::or_dash(s.port),
            ready,
            s.restarts.to_string(),
            traffic,
            s.last_exit.clone().unwrap_or_else(|| "-".into()),
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
            "INSTANCE",
            "SERVICE",
            "PID",
            "PORT",
            "RELEASE",
            "STATE",
            "HEALTH",
            "CPU",
            "MEM",
            "LAST CHECK",
        ]);
        for (s, i) in instances {
            let health = if i.adopted {
                format!("{} (adopted)", i.health)
            } else {
                i.health.clone()
            };
            table.add_row([
                i.id.clone(),
                s.name.clone(),
                output::or_dash(i.pid),
                output::or_dash(i.port),
                i.release.clone(),
                i.state.clone(),
                health,
                i.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
                i.rss_bytes
                    .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
                i.checks.last().map_or("-".into(), |c| c.detail.clone()),
            ]);
        }
        println!("\n{table}");
    }
    Ok(0)
}

/// Ready instances per release: `2/2` when one release runs, `r3 1/1 new · r2 3/3 current`
/// while two do (a deploy, a standby, a watch).
fn ready_column(s: &slipway_api::ServiceStatus) -> String {
    match s.sets.as_slice() {
        [] => format!("0/{}", s.replicas),
        [one] => format!("{}/{}", one.ready, one.replicas),
        many => many
            .iter()
            .map(|x| format!("{} {}/{} {}", x.release, x.ready, x.replicas, x.role))
            .collect::<Vec<_>>()
            .join(" · "),
    }
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

pub(crate) async fn audit(
    ctx: &Context,
    limit: u32,
    action: Option<String>,
) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let mut path = format!("/v1/audit?limit={limit}");
    if let Some(env) = &ctx.env {
        path.push_str(&format!("&env={}", query_value(env)));
    }
    if let Some(a) = &action {
        path.push_str(&format!("&action={}", query_value(a)));
    }
    let entries: Vec<AuditEntry> = client.get(&path).await?;
    if ctx.json {
        output::json(&entries);
        return Ok(0);
    }
    let mut table = output::table([
        "ID", "TIME", "ACTOR", "ACTION", "ENV", "TARGET", "REASON", "OUTCOME",
    ]);
    for a in entries {
        table.add_row([
            a.id.to_string(),
            output::time(a.time),
            a.actor,
            a.action,
            a.environment.unwrap_or_else(|| "-".into()),
            a.target,
            a.reason.unwrap_or_else(|| "-".into()),
            a.outcome,
        ]);
    }
    println!("{table}");
    Ok(0)
}

/// A value for a query string (letters, digits and `-._~*` pass; the rest is %-encoded).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

/// `slipway logs SERVICE`: the newest lines, then (with `-f`) new ones as they come.
pub(crate) async fn logs(ctx: &Context, args: crate::args::LogsArgs) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let since = match &args.since {
        None => None,
        Some(text) => Some(parse_since(text)?),
    };
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(env) = &ctx.env {
        query.push(("env".into(), env.clone()));
    }
    if let Some(level) = &args.level {
        query.push(("level".into(), level.clone()));
    }
    if let Some(grep) = &args.grep {
        query.push(("grep".into(), grep.clone()));
    }
    let path = |extra: Vec<(&str, String)>| {
        let mut q = query.clone();
        q.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        let encoded: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        format!("/v1/services/{}/logs?{}", args.service, encoded.join("&"))
    };
    let mut first = vec![("limit", args.limit.to_string())];
    if let Some(t) = since {
        first.push(("since", t.to_string()));
    }
    let lines: Vec<LogLine> = client.get(&path(first)).await?;
    let mut last = lines.last().map(|l| l.ts);
    for line in &lines {
        print_log(ctx, line);
    }
    if !args.follow {
        return Ok(0);
    }
    const PAGE: usize = 1000;
    loop {
        let mut next = vec![("limit", PAGE.to_string())];
        if let Some(t) = last {
            next.push(("after", t.to_string()));
        }
        let lines: Vec<LogLine> = client.get(&path(next)).await?;
        for line in &lines {
            print_log(ctx, line);
        }
        if let Some(l) = lines.last() {
            last = Some(l.ts);
        }
        // A full page means more is waiting; otherwise wait for new lines.
        if lines.len() < PAGE {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

fn parse_since(text: &str) -> Result<jiff::Timestamp, CliError> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let ago: slipway_spec::units::Duration = text.parse().map_err(|_| {
        CliError::new(format!("`--since {text}` is neither a duration nor a time"))
            .hint("write a duration such as 10m or 2h, or a time such as 2026-11-22T10:00:00Z")
    })?;
    let span = jiff::SignedDuration::try_from(ago.std()).unwrap_or(jiff::SignedDuration::MAX);
    Ok(jiff::Timestamp::now()
        .checked_sub(span)
        .unwrap_or(jiff::Timestamp::MIN))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_log(ctx: &Context, line: &LogLine) {
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(line).expect("log lines serialize")
        );
        return;
    }
    let level = line
        .level
        .as_deref()
        .map(|l| format!(" {}", l.to_uppercase()))
        .unwrap_or_default();
    let fields = if line.fields.is_empty() {
        String::new()
    } else {
        let kv: Vec<String> = line
            .fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        format!("  {}", kv.join(" "))
    };
    println!(
        "{} {}{level} {}{fields}",
        line.ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        line.instance,
        line.message
    );
}

/// `slipway cron run NAME`.
pub(crate) async fn cron_run(ctx: &Context, name: &str) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    let path = match &ctx.env {
        Some(env) => format!("/v1/services/{name}/runs?env={env}"),
        None => format!("/v1/services/{name}/runs"),
    };
    let started: RunStarted = client.post(&path, &serde_json::json!({})).await?;
    if ctx.json {
        output::json(&started);
    } else {
        println!(
            "started {} run {} (`slipway logs {}` shows its output)",
            started.service, started.run, started.service
        );
    }
    Ok(0)
}
