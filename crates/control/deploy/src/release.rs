//! Releases: what a deploy brings, frozen. A release is the code version plus the fully
//! resolved configuration of every service of the environment (the file's, with the
//! environment's `--set` overrides applied to every service alike) and the versions of the
//! secrets it was given. Rolling back to a release restores all of it.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use slipway_spec::resolve::ResolvedEnv;

/// The stored form of a release (the store keeps it as opaque JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSnapshot {
    /// Every service as it runs in this release.
    pub config: ResolvedEnv,
    /// The environment's overrides in effect (`slipway deploy --set`), already applied to
    /// every service's variables in `config`.
    pub overrides: IndexMap<String, String>,
    /// Secret name → a digest of its value when the release was made (never the value).
    pub secrets: IndexMap<String, String>,
    /// The applied generation of the project file it was built from.
    pub generation: i64,
    /// The commit it was built from, when a pipeline run made it.
    #[serde(default)]
    pub commit: Option<Commit>,
}

/// A commit a release was built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Full sha.
    pub sha: String,
    /// The ref it was deployed for (`main`, `v1.2.3`).
    pub git_ref: String,
    /// When it was committed (Unix milliseconds).
    pub time_ms: i64,
    /// The pipeline run that deployed it.
    pub run: Option<i64>,
}

impl ReleaseSnapshot {
    /// A release of `file` (an environment resolved from the project file) with `overrides`
    /// applied to every service: one complete set of variables for all of them.
    pub fn new(
        file: &ResolvedEnv,
        overrides: IndexMap<String, String>,
        secrets: IndexMap<String, String>,
        generation: i64,
    ) -> Self {
        let mut config = file.clone();
        for service in config.services.values_mut() {
            for (k, v) in &overrides {
                service.env.insert(k.clone(), v.clone());
            }
        }
        ReleaseSnapshot {
            config,
            overrides,
            secrets,
            generation,
            commit: None,
        }
    }
}

/// A release's id as people and instances see it: `r3`.
pub fn release_id(number: i64) -> String {
    format!("r{number}")
}

/// Reads `r3` or `3`.
pub fn parse_release_id(text: &str) -> Option<i64> {
    let digits = text.trim().strip_prefix('r').unwrap_or(text.trim());
    digits.parse().ok().filter(|n| *n > 0)
}

/// One line saying what a release changes against the one before.
pub fn describe(previous: Option<&ReleaseSnapshot>, next: &ReleaseSnapshot) -> String {
    let Some(previous) = previous else {
        return "first release".to_string();
    };
    let before = serde_json::to_value(&previous.config).unwrap_or_default();
    let after = serde_json::to_value(&next.config).unwrap_or_default();
    let plan = slipway_spec::plan::diff(Some(&before), &after);
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in &next.overrides {
        if previous.overrides.get(k) != Some(v) {
            parts.push(format!("set {k}"));
        }
    }
    for k in previous.overrides.keys() {
        if !next.overrides.contains_key(k) {
            parts.push(format!("unset {k}"));
        }
    }
    let changed: Vec<&str> = plan
        .services
        .iter()
        .filter(|s| s.action != slipway_spec::plan::Action::Unchanged)
        .map(|s| s.name.as_str())
        .collect();
    if !changed.is_empty() && parts.is_empty() {
        parts.push(format!("changes {}", changed.join(", ")));
    }
    if previous.secrets != next.secrets {
        parts.push("secrets changed".to_string());
    }
    if parts.is_empty() {
        "same configuration".to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ResolvedEnv {
        let project = slipway_spec::load_str(
            std::path::Path::new("/tmp/slipway.toml"),
            "[project]\nname = \"t\"\n[env]\nA = \"1\"\n[services.web]\nstart = \"x\"\nport = 0\n[services.worker]\nkind = \"worker\"\nstart = \"y\"\n",
            None,
        )
        .expect("valid");
        project.resolve("local").expect("resolves")
    }

    #[test]
    fn overrides_reach_every_service_and_are_described() {
        let first = ReleaseSnapshot::new(&env(), IndexMap::new(), IndexMap::new(), 1);
        let mut overrides = IndexMap::new();
        overrides.insert("A".to_string(), "2".to_string());
        overrides.insert("B".to_string(), "x".to_string());
        let second = ReleaseSnapshot::new(&env(), overrides, IndexMap::new(), 1);
        for s in second.config.services.values() {
            assert_eq!(s.env["A"], "2");
            assert_eq!(s.env["B"], "x");
        }
        assert_eq!(describe(None, &first), "first release");
        assert_eq!(describe(Some(&first), &second), "set A; set B");
        assert_eq!(describe(Some(&second), &first), "unset A; unset B");
        assert_eq!(describe(Some(&first), &first), "same configuration");
    }

    #[test]
    fn release_ids_read_both_ways() {
        assert_eq!(release_id(3), "r3");
        assert_eq!(parse_release_id("r3"), Some(3));
        assert_eq!(parse_release_id("12"), Some(12));
        assert_eq!(parse_release_id("r0"), None);
        assert_eq!(parse_release_id("latest"), None);
    }
}
