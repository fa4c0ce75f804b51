//! `slipway metrics …`: PromQL against the control plane's Prometheus-compatible API. People get
//! tables (a sparkline per series for ranges); `--json` prints Prometheus' own answer, so
//! scripts written for `curl prometheus/api/v1/query` read it unchanged.

use serde_json::Value as Json;

use crate::Context;
use crate::args::MetricsCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub(crate) async fn metrics(ctx: &Context, cmd: MetricsCommand) -> Result<u8, CliError> {
    let client = Client::connect(&ctx.state).await?;
    match cmd {
        MetricsCommand::Query {
            expr,
            range,
            step,
            time,
        } => query(ctx, &client, &expr, range, step, time).await,
        MetricsCommand::Series { matchers } => series(ctx, &client, matchers).await,
        MetricsCommand::Targets => targets(ctx, &client).await,
    }
}

/// Unix seconds of `--time` (RFC 3339 or seconds), or now.
fn when(time: Option<&str>) -> Result<f64, CliError> {
    let Some(t) = time else {
        return Ok(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    };
    if let Ok(secs) = t.parse::<f64>() {
        return Ok(secs);
    }
    t.parse::<jiff::Timestamp>()
        .map(|ts| ts.as_millisecond() as f64 / 1000.0)
        .map_err(|_| {
            CliError::new(format!("`{t}` is not a time"))
                .hint("write RFC 3339 (2026-12-01T10:00:00Z) or Unix seconds")
        })
}

fn seconds(flag: &str, text: &str) -> Result<f64, CliError> {
    text.parse::<slipway_spec::units::Duration>()
        .map(|d| d.std().as_secs_f64())
        .map_err(|_| {
            CliError::new(format!("`--{flag} {text}` is not a duration"))
                .hint("write a number and a unit: 90s, 15m, 1h, 7d")
        })
}

/// A query that does not parse: the expression with a caret under the position the API named
/// (`1:5: parse error: …`).
fn caret(expr: &str, err: CliError) -> CliError {
    let Some((pos, _)) = err.message.split_once(": parse error") else {
        return err;
    };
    let Some((line, column)) = pos.split_once(':') else {
        return err;
    };
    let (Ok(line), Ok(column)) = (line.parse::<usize>(), column.parse::<usize>()) else {
        return err;
    };
    let Some(text) = expr.lines().nth(line.saturating_sub(1)) else {
        return err;
    };
    let pad = " ".repeat(column.saturating_sub(1));
    err.detail(format!("  {text}\n  {pad}^\n"))
        .hint("see https://prometheus.io/docs/prometheus/latest/querying/basics/")
}

async fn query(
    ctx: &Context,
    client: &Client,
    expr: &str,
    range: Option<String>,
    step: Option<String>,
    time: Option<String>,
) -> Result<u8, CliError> {
    let end = when(time.as_deref())?;
    let answer = match &range {
        None => {
            client
                .prometheus(
                    "/api/v1/query",
                    &[("query", expr.to_string()), ("time", end.to_string())],
                )
                .await
        }
        Some(r) => {
            let range = seconds("range", r)?;
            let step = match &step {
                Some(s) => seconds("step", s)?,
                None => (range / 60.0).max(1.0),
            };
            client
                .prometheus(
                    "/api/v1/query_range",
                    &[
                        ("query", expr.to_string()),
                        ("start", (end - range).to_string()),
                        ("end", end.to_string()),
                        ("step", step.to_string()),
                    ],
                )
                .await
        }
    }
    .map_err(|e| caret(expr, e))?;
    if ctx.json {
        output::json(&answer);
        return Ok(0);
    }
    let data = &answer["data"];
    let result = &data["result"];
    match data["resultType"].as_str().unwrap_or_default() {
        "scalar" | "string" => println!("{}", text(&result[1])),
        "vector" => {
            let rows = result.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no series match");
                return Ok(0);
            }
            let mut t = output::table(["SERIES", "VALUE"]);
            for r in rows {
                t.add_row([series_name(&r["metric"]), text(&r["value"][1])]);
            }
            println!("{t}");
        }
        "matrix" => {
            let rows = result.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no series match");
                return Ok(0);
            }
            let mut t = output::table(["SERIES", "MIN", "MAX", "LAST", "OVER THE RANGE"]);
            for r in rows {
                let points: Vec<(f64, f64)> = r["values"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                let finite: Vec<f64> = points
                    .iter()
                    .map(|p| p.1)
                    .filter(|v| v.is_finite())
                    .collect();
                let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
                let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let last = points.last().map_or("-".to_string(), |p| number(p.1));
                let (from, to) = match &range {
                    Some(r) => (end - seconds("range", r)?, end),
                    None => (end, end),
                };
                t.add_row([
                    series_name(&r["metric"]),
                    if finite.is_empty() {
                        "-".into()
                    } else {
                        number(min)
                    },
                    if finite.is_empty() {
                        "-".into()
                    } else {
                        number(max)
                    },
                    last,
                    sparkline(&points, from, to, 40),
                ]);
            }
            println!("{t}");
        }
        other => println!("{other}: {result}"),
    }
    Ok(0)
}

/// A value as Prometheus writes it, shortened for a table.
fn text(v: &Json) -> String {
    match v.as_str() {
        Some(s) => s.parse::<f64>().map_or_else(|_| s.to_string(), number),
        None => v.to_string(),
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v}")
    } else if v.abs() >= 0.001 && v.abs() < 1e9 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.4e}")
    }
}

/// `name{label="value", …}`, as Prometheus prints a series.
fn series_name(metric: &Json) -> String {
    let Some(map) = metric.as_object() else {
        return "{}".into();
    };
    let name = map.get("__name__").and_then(Json::as_str).unwrap_or("");
    let mut labels: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
        .collect();
    labels.sort();
    if labels.is_empty() && !name.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(", "))
    }
}

/// `width` cells over `[from, to]`: each the mean of the points in it, scaled between the
/// series' min and max; a blank where the series had no point.
fn sparkline(points: &[(f64, f64)], from: f64, to: f64, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut cells = vec![(0.0, 0usize); width];
    let span = (to - from).max(f64::MIN_POSITIVE);
    for &(t, v) in points {
        if !v.is_finite() {
            continue;
        }
        let i = (((t - from) / span) * (width as f64 - 1.0)).round();
        let i = (i.max(0.0) as usize).min(width - 1);
        cells[i].0 += v;
        cells[i].1 += 1;
    }
    let means: Vec<Option<f64>> = cells
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
        .collect();
    let lo = means
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = means
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    means
        .iter()
        .map(|m| match m {
            None => ' ',
            Some(_) if hi <= lo => BARS[3],
            Some(v) => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
        })
        .collect()
}

async fn series(ctx: &Context, client: &Client, matchers: Vec<String>) -> Result<u8, CliError> {
    let matchers = if matchers.is_empty() {
        vec![r#"{__name__=~".+"}"#.to_string()]
    } else {
        matchers
    };
    let params: Vec<(&str, String)> = matchers.iter().map(|m| ("match[]", m.clone())).collect();
    let answer = client
        .prometheus("/api/v1/series", &params)
        .await
        .map_err(|e| match matchers.as_slice() {
            [one] => caret(one, e),
            _ => e,
        })?;
    if ctx.json {
        output::json(&answer);
        return Ok(0);
    }
    let list = answer["data"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no series match");
        return Ok(0);
    }
    let mut names: Vec<String> = list.iter().map(series_name).collect();
    names.sort();
    for n in &names {
        println!("{n}");
    }
    eprintln!("{} series", names.len());
    Ok(0)
}

async fn targets(ctx: &Context, client: &Client) -> Result<u8, CliError> {
    let answer = client.prometheus("/api/v1/targets", &[]).await?;
    if ctx.json {
        output::json(&answer);
        return Ok(0);
    }
    let list = answer["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!(
            "no scrape targets: give a service `metrics = {{ path = \"/metrics\" }}` or add [[metrics.targets]]"
        );
        return Ok(0);
    }
    let mut t = output::table([
        "JOB",
        "INSTANCE",
        "HEALTH",
        "LAST SCRAPE",
        "DURATION",
        "SAMPLES",
        "URL",
        "ERROR",
    ]);
    let mut down = 0;
    for target in &list {
        let health = target["health"].as_str().unwrap_or("unknown");
        if health == "down" {
            down += 1;
        }
        let last = target["lastScrape"]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map_or("-".to_string(), output::time);
        let duration = target["lastScrapeDuration"]
            .as_f64()
            .map_or("-".to_string(), |d| format!("{:.1} ms", d * 1000.0));
        t.add_row([
            target["labels"]["job"].as_str().unwrap_or("-").to_string(),
            target["labels"]["instance"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            health.to_string(),
            last,
            duration,
            target["samples"].to_string(),
            target["scrapeUrl"].as_str().unwrap_or("-").to_string(),
            match target["lastError"].as_str() {
                Some("") | None => "-".to_string(),
                Some(e) => e.to_string(),
            },
        ]);
    }
    println!("{t}");
    if down > 0 {
        eprintln!("{down} of {} targets down", list.len());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_between_the_series_extremes() {
        let points: Vec<(f64, f64)> = (0..8).map(|i| (f64::from(i), f64::from(i))).collect();
        assert_eq!(sparkline(&points, 0.0, 7.0, 8), "▁▂▃▄▅▆▇█");
        assert_eq!(
            sparkline(&[(0.0, 1.0), (7.0, 1.0)], 0.0, 7.0, 8),
            "▄      ▄"
        );
    }

    #[test]
    fn series_print_as_prometheus_writes_them() {
        let m = serde_json::json!({"__name__": "up", "job": "web", "instance": "a"});
        assert_eq!(series_name(&m), r#"up{instance="a", job="web"}"#);
        assert_eq!(
            series_name(&serde_json::json!({"job": "x"})),
            r#"{job="x"}"#
        );
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn a_parse_error_points_at_its_column() {
        let e = caret(
            "foo bar",
            CliError::new("1:5: parse error: unexpected identifier \"bar\""),
        );
        assert_eq!(e.detail.as_deref(), Some("  foo bar\n      ^\n"));
    }
}
