//! SLOs written for other tools, as `[slos.NAME]`: Sloth specs (`version: prometheus/v1`,
//! `slos[].sli.events.error_query`/`total_query`) and OpenSLO v1 `SLO` documents with a
//! ratio indicator (`spec.indicator.spec.ratioMetric`, good or bad over total, the queries
//! under `metricSource.spec.query`), either with `{{.window}}` where the range goes.

use indexmap::IndexMap;
use slipway_spec::model::{self, Indicator};
use slipway_spec::units::{Duration, Percent};
use yaml_rust2::{Yaml, YamlLoader};

fn text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        _ => None,
    }
}

fn number(y: &Yaml) -> Option<f64> {
    match y {
        Yaml::Integer(i) => Some(*i as f64),
        Yaml::Real(r) => r.parse().ok(),
        Yaml::String(s) => s.trim().trim_end_matches('%').parse().ok(),
        _ => None,
    }
}

fn objective(percent: f64, name: &str) -> Result<Percent, String> {
    format!("{}%", (percent * 1e6).round() / 1e6)
        .parse()
        .map_err(|e| format!("SLO `{name}`: the objective {percent} is not a percentage: {e:?}"))
}

fn query(y: &Yaml) -> Option<String> {
    // OpenSLO: `{metricSource: {type, spec: {query}}}`; some write the query directly.
    text(&y["metricSource"]["spec"]["query"]).or_else(|| text(&y["metricSource"]["spec"]["promql"]))
}

fn sloth(doc: &Yaml, out: &mut IndexMap<String, model::Slo>) -> Result<(), String> {
    let service = text(&doc["service"]);
    let Some(slos) = doc["slos"].as_vec() else {
        return Err("a Sloth spec lists its SLOs under `slos`".into());
    };
    for s in slos {
        let name = text(&s["name"]).ok_or("a Sloth SLO has no `name`")?;
        let events = &s["sli"]["events"];
        let (Some(bad), Some(total)) = (text(&events["error_query"]), text(&events["total_query"]))
        else {
            return Err(format!(
                "Sloth SLO `{name}`: only `sli.events` (error_query and total_query) can be imported"
            ));
        };
        let objective = objective(
            number(&s["objective"]).ok_or(format!("Sloth SLO `{name}` has no `objective`"))?,
            &name,
        )?;
        out.insert(
            name,
            model::Slo {
                description: text(&s["description"])
                    .or_else(|| service.clone().map(|s| format!("service {s}"))),
                objective,
                indicator: Some(Indicator::Ratio),
                bad: Some(bad),
                total: Some(total),
                ..Default::default()
            },
        );
    }
    Ok(())
}

fn openslo(doc: &Yaml, out: &mut IndexMap<String, model::Slo>) -> Result<(), String> {
    if text(&doc["kind"]).as_deref() != Some("SLO") {
        return Ok(()); // SLIs, alert policies, services: nothing of their own to import
    }
    let name = text(&doc["metadata"]["name"]).ok_or("an OpenSLO SLO has no `metadata.name`")?;
    let spec = &doc["spec"];
    let ratio = &spec["indicator"]["spec"]["ratioMetric"];
    let total = query(&ratio["total"]).ok_or(format!(
        "OpenSLO SLO `{name}`: only an inline ratioMetric indicator with a Prometheus query can be imported"
    ))?;
    let (good, bad) = (query(&ratio["good"]), query(&ratio["bad"]));
    if good.is_none() && bad.is_none() {
        return Err(format!(
            "OpenSLO SLO `{name}`: its ratioMetric has neither `good` nor `bad`"
        ));
    }
    let first = &spec["objectives"][0];
    let percent = number(&first["targetPercent"])
        .or_else(|| number(&first["target"]).map(|t| t * 100.0))
        .ok_or(format!("OpenSLO SLO `{name}` has no objective target"))?;
    let window = match text(&spec["timeWindow"][0]["duration"]) {
        Some(d) => Some(
            d.replace('w', "d") // weeks are not a unit of ours: 1w → 7d below
                .parse::<Duration>()
                .ok()
                .map(|x| {
                    if d.ends_with('w') {
                        Duration(x.0 * 7)
                    } else {
                        x
                    }
                })
                .ok_or(format!(
                    "OpenSLO SLO `{name}`: the window `{d}` is not a duration"
                ))?,
        ),
        None => None,
    };
    out.insert(
        name.clone(),
        model::Slo {
            description: text(&spec["description"]),
            objective: objective(percent, &name)?,
            window: window.filter(|w| w.0 != std::time::Duration::from_secs(30 * 86_400)),
            indicator: Some(Indicator::Ratio),
            good,
            bad,
            total: Some(total),
            ..Default::default()
        },
    );
    Ok(())
}

/// The SLOs of a Sloth spec or of OpenSLO documents (one or several in the YAML).
pub fn import(yaml: &str) -> Result<IndexMap<String, model::Slo>, String> {
    let docs = YamlLoader::load_from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
    let mut out = IndexMap::new();
    for doc in &docs {
        match (text(&doc["version"]), text(&doc["apiVersion"])) {
            (Some(v), _) if v == "prometheus/v1" => sloth(doc, &mut out)?,
            (_, Some(v)) if v.starts_with("openslo/") => openslo(doc, &mut out)?,
            _ => {
                return Err(
                    "neither a Sloth spec (`version: prometheus/v1`) nor an OpenSLO document (`apiVersion: openslo/v1`)".into(),
                );
            }
        }
    }
    if out.is_empty() {
        return Err("no SLO in it".into());
    }
    Ok(out)
}

/// The SLOs as `slipway.toml` writes them.
pub fn to_toml(slos: &IndexMap<String, model::Slo>) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        slos: &'a IndexMap<String, model::Slo>,
    }
    toml::to_string(&File { slos }).unwrap_or_default()
}
