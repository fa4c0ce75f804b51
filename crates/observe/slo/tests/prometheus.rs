//! The rules an SLO becomes, checked by Prometheus itself: `promtool check rules` accepts the
//! exported file, and `promtool test rules` evaluates it over series with a known error rate
//! (2 % against a 99.9 % objective: a burn of 20×), where the page and the ticket must fire
//! with our labels and annotations (for production only: staging is clean, and records an
//! error ratio of 0, not nothing).

use std::process::Command;

use slipway_slo::{Slo, prometheus_rules};

fn slos() -> Vec<Slo> {
    let config: slipway_spec::model::Config = toml::from_str(
        r#"
[services.api]
start = "./api"
port = 8080

[slos.api-availability]
service = "api"
objective = "99.9%"

[slos.api-latency]
service = "api"
objective = "99%"
indicator = "latency"
latency = "256ms"

[slos.jobs]
objective = "99%"
indicator = "ratio"
bad = 'sum(rate(jobs_failed_total[{{.window}}]))'
total = 'sum(rate(jobs_total[{{.window}}]))'
"#,
    )
    .unwrap();
    let (slos, problems) = Slo::all(&config);
    assert!(problems.is_empty(), "{problems:?}");
    slos
}

fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    slipway_metrics_testkit::require_prometheus();
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_exported_rules_and_fires_them_as_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let slos = slos();
    std::fs::write(dir.path().join("slo.yml"), prometheus_rules(&slos)).unwrap();
    let (ok, out) = promtool(&["check", "rules", "slo.yml"], dir.path());
    assert!(ok, "{out}");
    // 3 SLOs × (8 windows recorded + page + ticket).
    assert!(out.contains("SUCCESS: 30 rules found"), "{out}");

    let summary =
        "SLO api-availability (production) burns its error budget fast: 20.0× the sustainable rate";
    let description = "objective 99.9% over 30d; `slipway slo` shows the budget left";
    let test = format!(
        r#"rule_files: [slo.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'slipway_proxy_requests_total{{service="api",environment="production",code="2xx"}}'
        values: '0+980x180'
      - series: 'slipway_proxy_requests_total{{service="api",environment="production",code="5xx"}}'
        values: '0+20x180'
      - series: 'slipway_proxy_requests_total{{service="api",environment="staging",code="2xx"}}'
        values: '0+1000x180'
    promql_expr_test:
      - expr: 'slo:sli_error:ratio_rate5m{{slo="api-availability"}}'
        eval_time: 90m
        exp_samples:
          - labels: 'slo:sli_error:ratio_rate5m{{environment="production",slo="api-availability"}}'
            value: 0.02
          - labels: 'slo:sli_error:ratio_rate5m{{environment="staging",slo="api-availability"}}'
            value: 0
    alert_rule_test:
      - eval_time: 90m
        alertname: slo_api_availability_page
        exp_alerts:
          - exp_labels:
              severity: P1
              slo: api-availability
              environment: production
            exp_annotations:
              summary: "{summary}"
              description: "{description}"
      - eval_time: 90m
        alertname: slo_api_availability_ticket
        exp_alerts:
          - exp_labels:
              severity: P3
              slo: api-availability
              environment: production
            exp_annotations:
              summary: "SLO api-availability (production) burns its error budget: 20.0× the sustainable rate"
              description: "{description}"
      - eval_time: 90m
        alertname: slo_api_latency_page
        exp_alerts: []
"#
    );
    std::fs::write(dir.path().join("test.yml"), test).unwrap();
    let (ok, out) = promtool(&["test", "rules", "test.yml"], dir.path());
    assert!(ok, "{out}");
}

#[test]
fn budgets_windows_and_names_are_as_written() {
    let slos = slos();
    let a = &slos[0];
    assert_eq!(a.budget(), 0.001);
    assert_eq!(a.objective_text, "99.9%");
    let windows: Vec<String> = a.windows().into_iter().map(slipway_slo::compact).collect();
    assert_eq!(windows, ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]);
    assert_eq!(
        a.alert_name(slipway_spec::model::BurnAlert::Page),
        "slo_api_availability_page"
    );
    assert!(
        slos[1].error_ratio.contains("le=\"0.256\""),
        "{}",
        slos[1].error_ratio
    );
    assert!(
        slos[2]
            .error_ratio_over(std::time::Duration::from_secs(3600))
            .contains("jobs_failed_total[1h]")
    );
}
