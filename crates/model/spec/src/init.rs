//! `slipway init`: a commented starter `slipway.toml`, with build and start commands guessed
//! from what is already in the folder (a Procfile, Cargo.toml, package.json or pyproject.toml).

use std::fmt::Write as _;
use std::path::Path;

/// What was guessed for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuessedService {
    /// Service name.
    pub name: String,
    /// `web` or `worker`.
    pub kind: &'static str,
    /// Build command.
    pub build: Option<String>,
    /// Start command.
    pub start: String,
}

/// A starter file and what it was based on.
#[derive(Clone, Debug)]
pub struct Starter {
    /// The file's text.
    pub text: String,
    /// The file the commands were guessed from, if any.
    pub guessed_from: Option<&'static str>,
}

/// Writes a starter file for the project in `dir`.
pub fn starter(dir: &Path) -> Starter {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_string());
    let name = sanitize(&name);
    let (services, guessed_from) = guess(dir, &name);
    let release = procfile_release(dir).filter(|_| guessed_from == Some("Procfile"));
    Starter {
        text: render(&name, &services, guessed_from, release.as_deref()),
        guessed_from,
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "app".into() } else { s }
}

fn guess(dir: &Path, name: &str) -> (Vec<GuessedService>, Option<&'static str>) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    if let Some(text) = read("Procfile") {
        let services: Vec<GuessedService> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, c)| (n.trim(), c.trim()))
            .filter(|(n, c)| {
                !n.is_empty() && !c.is_empty() && !n.starts_with('#') && *n != "release"
            })
            .map(|(n, c)| GuessedService {
                name: sanitize(n),
                kind: if n == "web" { "web" } else { "worker" },
                build: None,
                start: c.to_string(),
            })
            .collect();
        if !services.is_empty() {
            return (services, Some("Procfile"));
        }
    }
    if let Some(text) = read("Cargo.toml") {
        let bin = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
            .unwrap_or_else(|| name.to_string());
        return (
            vec![web(
                Some("cargo build --release".into()),
                format!("./target/release/{bin}"),
            )],
            Some("Cargo.toml"),
        );
    }
    if let Some(text) = read("package.json") {
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let scripts = json.get("scripts");
        let has = |s: &str| scripts.and_then(|x| x.get(s)).is_some();
        let build = if has("build") {
            Some("npm ci && npm run build".to_string())
        } else {
            Some("npm ci".to_string())
        };
        let start = if has("start") {
            "npm start".to_string()
        } else {
            let main = json
                .get("main")
                .and_then(|m| m.as_str())
                .unwrap_or("index.js");
            format!("node {main}")
        };
        return (vec![web(build, start)], Some("package.json"));
    }
    if let Some(text) = read("pyproject.toml") {
        let table = text.parse::<toml::Table>().ok();
        let script = table.as_ref().and_then(|t| {
            t.get("project")?
                .get("scripts")?
                .as_table()?
                .keys()
                .next()
                .cloned()
        });
        let start = match script {
            Some(s) => s,
            None => format!("python -m {}", name.replace('-', "_")),
        };
        return (
            vec![web(Some("pip install .".into()), start)],
            Some("pyproject.toml"),
        );
    }
    (vec![web(None, "./server".into())], None)
}

/// The Procfile's `release:` command (Heroku's release phase: migrations), if it has one.
fn procfile_release(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Procfile")).ok()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim() == "release")
        .map(|(_, c)| c.trim().to_string())
        .filter(|c| !c.is_empty())
}

fn web(build: Option<String>, start: String) -> GuessedService {
    GuessedService {
        name: "web".into(),
        kind: "web",
        build,
        start,
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn render(
    name: &str,
    services: &[GuessedService],
    guessed_from: Option<&str>,
    release: Option<&str>,
) -> String {
    let mut out = String::new();
    let origin = match guessed_from {
        Some(f) => format!(" Commands were guessed from {f}: check them."),
        None => " Nothing to guess from was found: fill in your commands.".to_string(),
    };
    let _ = writeln!(out, "# slipway.toml, written by `slipway init`.{origin}");
    out.push_str(
        "# `slipway validate` checks this file; `slipway schema` prints its JSON Schema for\n\
         # editor completion; `slipway plan` shows what `slipway up` would change.\n\n",
    );
    let _ = writeln!(out, "[project]\nname = {}", quote(name));
    out.push_str("# Commands use this environment unless given --env.\ndefault_environment = \"staging\"\n\n");
    out.push_str(
        "# Variables every service of every environment gets (environments and services\n\
         # override them). Secrets do not go here: declare them under [secrets].\n\
         [env]\nLOG_LEVEL = \"info\"\n\n",
    );
    out.push_str(
        "# Secrets the services need; their values are stored encrypted, never in this file.\n\
         # [secrets]\n# DATABASE_URL = \"PostgreSQL connection string\"\n\n",
    );
    out.push_str(
        "# Environments. Pushes to `branch` deploy there; `requires` makes a commit pass the\n\
         # named environments first. Any service setting can be overridden per environment.\n\
         [environments.staging]\nbranch = \"main\"\n\n\
         [environments.production]\nbranch = \"prod\"\nrequires = [\"staging\"]\n\n",
    );
    if let Some(web) = services.iter().find(|s| s.kind == "web") {
        let _ = writeln!(
            out,
            "[environments.production.services.{}]\nreplicas = 2\n",
            web.name
        );
    }
    match release {
        Some(command) => {
            let _ = writeln!(
                out,
                "# One-shot command run before traffic moves to a new release (the Procfile's\n\
                 # `release:`).\n[deploy]\nrelease = {}\n",
                quote(command)
            );
        }
        None => out.push_str(
            "# One-shot command run before traffic moves to a new release (migrations).\n\
             # [deploy]\n# release = \"./migrate\"\n\n",
        ),
    }
    for s in services {
        let _ = writeln!(out, "[services.{}]", s.name);
        if s.kind == "web" {
            out.push_str("kind = \"web\"           # web | worker | cron\n");
        } else {
            out.push_str("kind = \"worker\"        # web | worker | cron\n");
        }
        match &s.build {
            Some(b) => {
                let _ = writeln!(out, "build = {}   # run once per release", quote(b));
            }
            None => out.push_str("# build = \"make\"      # run once per release\n"),
        }
        let _ = writeln!(
            out,
            "start = {}   # one instance; web instances get $PORT",
            quote(&s.start)
        );
        if s.kind == "web" {
            out.push_str(
                "port = 8080            # public port on Slipway's proxy\n\
                 replicas = 1\n\
                 health = \"/health\"     # readiness: an HTTP path answering 2xx\n\
                 strategy = \"rolling\"   # recreate | rolling | blue-green | canary\n",
            );
        } else {
            out.push_str(
                "# health = { command = \"./check\" }   # or { file = \"heartbeat\" }\n\
                 stop = { signal = \"SIGTERM\", grace = \"30s\" }\n",
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starter_for(files: &[(&str, &str)]) -> Starter {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let s = starter(dir.path());
        // Every starter must be a valid file as written.
        let path = dir.path().join("slipway.toml");
        if let Err(report) = crate::load_str(&path, &s.text, None) {
            panic!(
                "starter does not validate:\n{}\n{}",
                report.render(),
                s.text
            );
        }
        s
    }

    #[test]
    fn guesses_from_cargo() {
        let s = starter_for(&[("Cargo.toml", "[package]\nname = \"api\"\n")]);
        assert_eq!(s.guessed_from, Some("Cargo.toml"));
        assert!(s.text.contains("./target/release/api"));
    }

    #[test]
    fn guesses_from_procfile() {
        let s = starter_for(&[(
            "Procfile",
            "web: ./web\nworker: ./jobs\nrelease: ./migrate\n",
        )]);
        assert_eq!(s.guessed_from, Some("Procfile"));
        assert!(s.text.contains("[services.worker]"));
        assert!(s.text.contains("start = \"./jobs\""));
        // The release phase becomes the release command, not a service.
        assert!(
            s.text.contains("[deploy]\nrelease = \"./migrate\""),
            "{}",
            s.text
        );
        assert!(!s.text.contains("[services.release]"));
        crate::load_str(std::path::Path::new("slipway.toml"), &s.text, None)
            .expect("the starter file is valid");
    }

    #[test]
    fn guesses_from_package_json() {
        let s = starter_for(&[(
            "package.json",
            r#"{"scripts": {"build": "vite build", "start": "node server.js"}}"#,
        )]);
        assert!(s.text.contains("npm ci && npm run build"));
        assert!(s.text.contains("npm start"));
    }

    #[test]
    fn guesses_from_pyproject() {
        let s = starter_for(&[(
            "pyproject.toml",
            "[project]\nname = \"svc\"\n[project.scripts]\nsvc-serve = \"svc:main\"\n",
        )]);
        assert!(s.text.contains("start = \"svc-serve\""));
    }

    #[test]
    fn falls_back_to_a_placeholder() {
        let s = starter_for(&[]);
        assert_eq!(s.guessed_from, None);
        assert!(s.text.contains("./server"));
    }
}
