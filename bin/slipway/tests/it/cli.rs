//! Commands that need no control plane: `validate`, `schema`, `init`, `plan`, `completions`,
//! and how the CLI reports a control plane that is not there.

use crate::support::{Project, SMALL};

#[test]
fn validate_reports_all_three_mistakes_with_locations_and_hints() {
    let project = Project::new(
        "[services.web]\nstart = \"./server\"\nport = \"eighty\"\nreplica = 2\ndrain = \"30 parsecs\"\n",
    );
    let out = project.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = project.file().display().to_string();
    for (location, hint) in [
        (format!("{file}:3:8"), "write a number"),
        (format!("{file}:4:1"), "did you mean `replicas`?"),
        (format!("{file}:5:9"), "write a number with a unit"),
    ] {
        assert!(
            stderr.contains(&location),
            "missing {location} in:\n{stderr}"
        );
        assert!(stderr.contains(hint), "missing hint {hint:?} in:\n{stderr}");
    }
    assert!(stderr.contains("has 3 error(s)"), "{stderr}");
}

#[test]
fn validate_json_lists_diagnostics() {
    let project = Project::new(
        "[services.web]\nstart = \"./x\"\nport = 8080\nhealth = \"/health\"\ntimeout = 5\n",
    );
    let out = project
        .command()
        .args(["--json", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["diagnostics"][0]["line"], 5);
    assert_eq!(report["diagnostics"][0]["column"], 11);
    assert!(
        report["diagnostics"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("unit")
    );

    let good = Project::new(SMALL);
    let report = good.json(&["validate"]);
    assert_eq!(report["valid"], true);
    assert_eq!(report["services"], serde_json::json!(["web", "worker"]));
}

#[test]
fn a_missing_file_says_to_run_init() {
    let project = Project::new("");
    std::fs::remove_file(project.file()).unwrap();
    let out = project.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("slipway init"));
}

#[test]
fn init_writes_a_file_that_validates_and_refuses_to_overwrite() {
    let project = Project::new("");
    std::fs::remove_file(project.file()).unwrap();
    std::fs::write(
        project.dir.path().join("Cargo.toml"),
        "[package]\nname = \"api\"\n",
    )
    .unwrap();
    let out = project.ok(&["init"]);
    assert!(out.contains("guessed from Cargo.toml"), "{out}");
    let text = std::fs::read_to_string(project.file()).unwrap();
    assert!(text.contains("./target/release/api"));
    project.ok(&["validate"]);
    let again = project.run(&["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn schema_is_json_schema() {
    let project = Project::new(SMALL);
    let out = project.ok(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schema["title"], "slipway.toml");
    assert!(schema["properties"]["services"].is_object());
}

#[test]
fn plan_without_state_adds_everything_and_exits_2_with_detailed_exitcode() {
    let project = Project::new(SMALL);
    let plan = project.json(&["plan"]);
    assert_eq!(plan["recorded"], false);
    assert_eq!(plan["services"][0]["action"], "added");
    let out = project.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    // Planning does not start anything or create state it does not need.
    assert!(!project.state().database().exists());
}

#[test]
fn completions_are_generated() {
    let project = Project::new(SMALL);
    let out = project.ok(&["completions", "bash"]);
    assert!(out.contains("slipway"));
    assert!(out.contains("validate"));
}

#[test]
fn commands_that_need_the_control_plane_say_how_to_start_it() {
    let project = Project::new(SMALL);
    for args in [&["status"][..], &["events"], &["audit"], &["annotate", "x"]] {
        let out = project.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not running") && stderr.contains("slipway up"),
            "{args:?}: {stderr}"
        );
    }
    // `down` with nothing running is not an error.
    assert!(project.ok(&["down"]).contains("not running"));
}
