//! A Sloth spec and an OpenSLO document for the same objective import to the same SLO, and
//! what `to_toml` writes reads back as it.

use slipway_slo::Slo;
use slipway_slo::import::{import, to_toml};

const SLOTH: &str = r#"
version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighErrorRate
      page_alert:
        labels:
          severity: pageteam
"#;

const OPENSLO: &str = r#"
apiVersion: openslo/v1
kind: Service
metadata:
  name: myservice
spec:
  description: the service
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: requests-availability
spec:
  description: Common SLO based on availability for HTTP request responses.
  service: myservice
  indicator:
    metadata:
      name: availability
    spec:
      ratioMetric:
        counter: true
        bad:
          metricSource:
            type: Prometheus
            spec:
              query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total:
          metricSource:
            type: Prometheus
            spec:
              query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
  timeWindow:
    - duration: 30d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - displayName: good
      target: 0.999
"#;

fn resolved(yaml: &str) -> Slo {
    let slos = import(yaml).unwrap();
    assert_eq!(slos.len(), 1);
    let (name, spec) = slos.first().unwrap();
    Slo::from_spec(name, spec).unwrap()
}

#[test]
fn sloth_and_openslo_import_to_the_same_slo() {
    let a = resolved(SLOTH);
    let b = resolved(OPENSLO);
    assert_eq!(a, b);
    assert_eq!(a.name, "requests-availability");
    assert_eq!(a.objective_text, "99.9%");
    assert_eq!(a.budget(), 0.001);
    assert!(
        a.error_ratio_over(std::time::Duration::from_secs(300))
            .contains("[5m]")
    );

    // Written as slipway.toml, read back, the same.
    let toml = to_toml(&import(SLOTH).unwrap());
    assert!(toml.contains("[slos.requests-availability]"), "{toml}");
    let config: slipway_spec::model::Config = toml::from_str(&toml).unwrap();
    let (slos, problems) = Slo::all(&config);
    assert!(problems.is_empty());
    assert_eq!(slos, vec![a]);
}

#[test]
fn what_cannot_be_imported_is_named() {
    for (yaml, says) in [
        ("kind: Deployment", "neither a Sloth spec"),
        (
            "version: prometheus/v1\nslos:\n  - name: x\n    objective: 99\n    sli:\n      raw:\n        error_ratio_query: x",
            "only `sli.events`",
        ),
        (
            "apiVersion: openslo/v1\nkind: SLO\nmetadata:\n  name: y\nspec:\n  indicatorRef: shared",
            "inline ratioMetric",
        ),
        (
            "apiVersion: openslo/v1\nkind: Service\nmetadata:\n  name: z",
            "no SLO in it",
        ),
        ("a: [", "not YAML"),
    ] {
        let e = import(yaml).unwrap_err();
        assert!(e.contains(says), "{yaml}: {e}");
    }
}
