//! Golden tests: every file under `tests/configs/valid` loads (its warnings and resolved default
//! environment are snapshotted), every file under `tests/configs/invalid` fails with the
//! snapshotted diagnostics. Add a file to add a case; `cargo insta review` accepts new output.

use std::path::Path;

use slipway_spec::{LoadError, load};

/// Loads a config by its path relative to `tests/configs`, so diagnostics name a stable path.
fn check(relative: &Path) -> Result<slipway_spec::Project, slipway_spec::Report> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    let text = std::fs::read_to_string(root.join(relative)).unwrap();
    slipway_spec::load_str(relative, &text, None)
}

#[test]
fn valid_configs() {
    insta::glob!("configs/valid/*.toml", |path| {
        let relative = Path::new("valid").join(path.file_name().unwrap());
        let project = match check(&relative) {
            Ok(p) => p,
            Err(report) => panic!(
                "{} should be valid:\n{}",
                relative.display(),
                report.render()
            ),
        };
        let env = project.resolve(&project.default_environment()).unwrap();
        insta::assert_snapshot!("warnings", project.warnings.render());
        insta::assert_json_snapshot!("resolved", env, {
            ".dir" => "[dir]",
            ".services.*.cwd" => "[cwd]",
        });
    });
}

#[test]
fn invalid_configs() {
    insta::glob!("configs/invalid/*.toml", |path| {
        let relative = Path::new("invalid").join(path.file_name().unwrap());
        let report = match check(&relative) {
            Ok(_) => panic!("{} should be invalid", relative.display()),
            Err(report) => report,
        };
        assert!(report.error_count() > 0);
        for d in &report.diagnostics {
            assert!(
                d.hint.is_some(),
                "every diagnostic needs a hint: {}",
                d.message
            );
            assert!(d.line > 0 && d.column > 0);
        }
        insta::assert_snapshot!(report.render());
    });
}

#[test]
fn three_mistakes_are_reported_together() {
    let report = check(Path::new("invalid/three_mistakes.toml")).unwrap_err();
    let found: Vec<(usize, usize, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.hint.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(found.len(), 3, "{}", report.render());
    assert_eq!((found[0].0, found[0].1), (4, 8), "wrong type at the value");
    assert_eq!(
        (found[1].0, found[1].1, found[1].2),
        (5, 1, "did you mean `replicas`?")
    );
    assert_eq!(
        (found[2].0, found[2].1),
        (6, 9),
        "bad duration at the value"
    );
}

#[test]
fn environment_overrides_apply() {
    let project = check(Path::new("valid/full.toml")).unwrap();
    let staging = project.resolve("staging").unwrap();
    let production = project.resolve("production").unwrap();
    assert_eq!(staging.services["api"].replicas, 2);
    assert_eq!(production.services["api"].replicas, 4);
    // Overriding one field keeps the others.
    assert_eq!(production.services["api"].port, Some(8080));
    assert_eq!(staging.services["api"].env["LOG_LEVEL"], "debug");
    assert_eq!(production.services["api"].env["LOG_LEVEL"], "info");
    assert_eq!(production.services["api"].env["NODE_ENV"], "production");
    let steps: Vec<f64> = production.services["api"]
        .strategy
        .steps
        .iter()
        .map(|s| s.weight)
        .collect();
    assert_eq!(steps, [10.0, 50.0, 100.0]);
    assert_eq!(production.deploy.retain, 20);
    assert_eq!(staging.deploy.retain, 10);
    // Secrets scoped to a service reach only that service.
    assert!(
        production.services["api"]
            .secrets
            .contains(&"STRIPE_KEY".to_string())
    );
    assert!(
        !production.services["web"]
            .secrets
            .contains(&"STRIPE_KEY".to_string())
    );
    assert!(project.resolve("qa").is_err());
}

#[test]
fn procfile_supplies_services() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Procfile"),
        "web: ./server\nworker: ./jobs\nrelease: ./migrate\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("slipway.toml"), "[env]\nA = \"1\"\n").unwrap();
    let project = load(&dir.path().join("slipway.toml")).unwrap();
    let env = project.resolve("local").unwrap();
    assert_eq!(env.services.len(), 2);
    assert_eq!(
        env.services["web"].port,
        Some(slipway_spec::PROCFILE_WEB_PORT)
    );
    assert_eq!(env.deploy.release.as_deref(), Some("./migrate"));
    // Without slipway.toml, the Procfile alone is a project.
    std::fs::remove_file(dir.path().join("slipway.toml")).unwrap();
    let project = load(&dir.path().join("slipway.toml")).unwrap();
    assert_eq!(project.config.services.len(), 2);
}

#[test]
fn procfile_errors_point_into_the_procfile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), "web ./server\n").unwrap();
    let err = load(&dir.path().join("slipway.toml")).unwrap_err();
    let LoadError::Invalid { report } = err else {
        panic!("{err}")
    };
    assert!(
        report.render().contains("Procfile:1:1"),
        "{}",
        report.render()
    );
}

#[test]
fn missing_file_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(&dir.path().join("slipway.toml")),
        Err(LoadError::Missing { .. })
    ));
}

#[test]
fn the_quickstart_is_valid() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../examples/quickstart/slipway.toml");
    let project = load(&file).unwrap_or_else(|e| match e {
        LoadError::Invalid { report } => panic!("{}", report.render()),
        other => panic!("{other}"),
    });
    assert!(project.warnings.is_empty(), "{}", project.warnings.render());
    let staging = project.resolve("staging").unwrap();
    assert_eq!(staging.services["web"].replicas, 2);
    assert_eq!(
        project.resolve("production").unwrap().services["web"].replicas,
        3
    );
}

#[test]
fn schema_is_a_json_schema_with_every_section() {
    let schema = slipway_spec::json_schema();
    let properties = schema["properties"].as_object().unwrap();
    for section in [
        "project",
        "control",
        "env",
        "secrets",
        "environments",
        "services",
        "deploy",
        "logs",
        "database",
        "pipeline",
        "alerts",
        "slos",
        "flags",
        "channels",
    ] {
        assert!(properties.contains_key(section), "{section}");
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
