//! Keeps the docs honest: every source file says what it is for, every command is in the README,
//! every crate is on the map in ARCHITECTURE.md, and the README's example file is valid.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "snapshots") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["crates", "bin"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !read(f).starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not start with a `//!` comment saying what they are for: {undocumented:#?}"
    );
}

#[test]
fn every_command_is_in_the_readme() {
    let help = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("--help")
        .output()
        .expect("run slipway --help");
    let help = String::from_utf8(help.stdout).expect("utf-8 help");
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "parsed commands: {commands:?}");
    let readme = read(&root().join("README.md"));
    let missing: Vec<_> = commands
        .iter()
        .filter(|c| !readme.contains(&format!("| `{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's command table lacks {missing:?}"
    );
}

#[test]
fn every_crate_is_on_the_architecture_map() {
    let manifest = read(&root().join("Cargo.toml"));
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let members: Vec<&str> = manifest
        .lines()
        .skip_while(|l| !l.starts_with("members"))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
        .filter(|l| !l.is_empty())
        .collect();
    assert!(members.len() >= 5, "parsed members: {members:?}");
    let missing: Vec<_> = members
        .iter()
        .filter(|m| !architecture.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not map {missing:?}"
    );
}

#[test]
fn the_readme_example_file_is_valid() {
    let readme = read(&root().join("README.md"));
    let toml: String = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```toml block")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("slipway.toml");
    std::fs::write(&file, toml).expect("write");
    if let Err(e) = validate(&file) {
        panic!("README.md's example slipway.toml is invalid:\n{e}");
    }
}

/// `slipway -f FILE validate`: its stderr when it fails.
fn validate(file: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-f")
        .arg(file)
        .arg("validate")
        .output()
        .expect("run slipway validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_example_is_valid() {
    let examples = root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/") {
        let file = entry.expect("entry").path().join("slipway.toml");
        if !file.exists() {
            continue;
        }
        if let Err(e) = validate(&file) {
            panic!("{} is invalid:\n{e}", file.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples found");
}

/// Stops a control plane a test started in `dir`, however the test ends.
struct DownOnDrop<'a>(&'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = slipway(self.0).arg("down").output();
    }
}

/// `slipway` run in `dir` with the test's binaries first on `PATH` and no inherited settings.
fn slipway(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slipway"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("SLIPWAY_") {
            c.env_remove(k);
        }
    }
    c
}

/// What each Quickstart command must print (on stdout or stderr); every command must exit 0.
const QUICKSTART_EXPECTS: &[(&str, &str)] = &[
    ("slipway validate", "is valid"),
    ("slipway plan", "3 to add"),
    ("slipway up --detach", "control plane started"),
    ("slipway status", "report"),
    ("slipway deploy --set SAMPLE_VERSION=v2", "succeeded"),
    (
        "slipway deploy --strategy blue-green --set SAMPLE_VERSION=v3",
        "succeeded",
    ),
    ("slipway releases", "warm standby"),
    ("slipway rollback", "rolled back to r2"),
    ("slipway cron run report", "report"),
    ("slipway status --json", "\"environment\": \"staging\""),
    ("slipway events", "deploy.succeeded"),
    ("slipway audit", "rollback"),
    ("slipway down", "stopped"),
];

#[test]
fn the_readme_quickstart_runs_as_written() {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a Quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the Quickstart has a ```sh block");
    // Each command with the comment beside it.
    let commands: Vec<(&str, &str)> = block
        .lines()
        .map(|l| match l.split_once("  #") {
            Some((c, comment)) => (c.trim(), comment.trim()),
            None => (l.trim(), ""),
        })
        .filter(|(c, _)| !c.is_empty() && !c.starts_with('#'))
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    // A copy of the example; its fixed ports made free ones, so the test never collides with
    // another (the commands' `localhost:8180` become the port the proxy picked).
    let dir = tempfile::tempdir().expect("tempdir");
    let source = read(&root().join("examples/quickstart/slipway.toml"));
    let toml: String = source
        .lines()
        .map(|l| match l.trim_start().strip_prefix("port = ") {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => "port = 0".into(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("slipway.toml"), toml).expect("write");
    let bin = Path::new(env!("CARGO_BIN_EXE_slipway"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _down = DownOnDrop(dir.path());
    let mut web: Option<String> = None;
    for (command, comment) in commands {
        // The build and the `cd` are the test's own: it runs the built binary in the copy.
        if command.starts_with("cargo ")
            || command.starts_with("export ")
            || command.starts_with("cd ")
        {
            continue;
        }
        let command = match &web {
            Some(addr) => command.replace("localhost:8180", addr),
            None => command.to_string(),
        };
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(&command)
            .current_dir(dir.path())
            .env("PATH", &path);
        for (k, _) in std::env::vars() {
            if k.starts_with("SLIPWAY_") {
                sh.env_remove(k);
            }
        }
        let out = sh.output().expect("sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "README Quickstart: `{command}` failed ({}):\n{text}",
            out.status
        );
        if let Some((_, expected)) = QUICKSTART_EXPECTS.iter().find(|(c, _)| *c == command) {
            assert!(
                text.contains(expected),
                "README Quickstart: `{command}` did not say {expected:?}:\n{text}"
            );
        }
        if command.starts_with("curl") {
            assert!(text.contains("\"version\""), "`{command}`: {text}");
            // A comment that quotes the answer (`# "version":"v2"`) is checked too.
            if comment.starts_with('"') {
                assert!(
                    text.contains(comment),
                    "`{command}` did not say {comment}: {text}"
                );
            }
        }
        if command == "slipway up --detach" {
            let status = slipway(dir.path())
                .args(["--json", "status"])
                .output()
                .expect("status");
            let status: serde_json::Value =
                serde_json::from_slice(&status.stdout).expect("status --json");
            let port = status["services"][0]["port"].as_u64().expect("web port");
            web = Some(format!("127.0.0.1:{port}"));
        }
    }
}

#[test]
fn the_release_binary_carries_no_debug_info() {
    let manifest: toml::Table = read(&root().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml");
    let release = &manifest["profile"]["release"];
    // Line tables in the binary made it 137 MB for 25 MB of code.
    let split = release.get("split-debuginfo").and_then(|v| v.as_str());
    let stripped = release.get("strip").and_then(|v| v.as_str());
    assert!(
        split == Some("packed") || matches!(stripped, Some("debuginfo" | "symbols")),
        "[profile.release] must keep debug info out of the binary: {release:?}"
    );
}
