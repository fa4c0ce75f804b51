//! Plans: what applying a resolved environment would change against the recorded one.
//!
//! Plans compare the JSON form of [`crate::ResolvedEnv`] snapshots rather than the typed
//! structs, so a snapshot recorded by an older Slipway still compares. Values of secrets and of
//! variables whose names look sensitive are never shown, only whether they changed.

use serde::Serialize;
use serde_json::Value;

/// What would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The environment.
    pub environment: String,
    /// Whether anything was recorded before (false: everything is new).
    pub recorded: bool,
    /// Changes outside services (deploy settings, gate, declared secrets, shared settings).
    pub settings: Vec<FieldChange>,
    /// Per service, in the new file's order, then removed ones.
    pub services: Vec<ServiceChange>,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.settings.is_empty() || self.services.iter().any(|s| s.action != Action::Unchanged)
    }
}

/// How a service or variable changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New.
    Added,
    /// Gone.
    Removed,
    /// Different.
    Changed,
    /// The same.
    Unchanged,
}

/// A service's change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceChange {
    /// Service name.
    pub name: String,
    /// What happens to it.
    pub action: Action,
    /// Changed settings (not environment variables).
    pub fields: Vec<FieldChange>,
    /// Changed environment variables.
    pub env: Vec<EnvChange>,
}

/// One setting's change, values as people write them ([`human`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// Dotted path within the service (or environment).
    pub path: String,
    /// Before, if it existed.
    pub before: Option<String>,
    /// After, if it exists.
    pub after: Option<String>,
}

/// One environment variable's change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvChange {
    /// Variable name.
    pub key: String,
    /// What happens to it.
    pub action: Action,
    /// Old value, or `None` when absent or masked.
    pub before: Option<String>,
    /// New value, or `None` when absent or masked.
    pub after: Option<String>,
    /// Whether the values are hidden.
    pub masked: bool,
}

const SENSITIVE: [&str; 9] = [
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "PRIVATE",
    "CREDENTIAL",
    "DSN",
    "AUTH",
];

/// Whether a variable's value must not be shown: a declared secret, or a sensitive-looking
/// name (`*_PASSWORD`, `*_TOKEN`, `API_KEY`, a `DATABASE_URL` with credentials…).
pub fn is_sensitive(key: &str, value: Option<&str>, secrets: &[String]) -> bool {
    let upper = key.to_ascii_uppercase();
    secrets.iter().any(|s| s == key)
        || SENSITIVE.iter().any(|w| upper.contains(w))
        || value.is_some_and(|v| v.contains("://") && v.contains('@'))
}

/// Compares a recorded snapshot (if any) with the new one; both are JSON forms of
/// [`crate::ResolvedEnv`].
pub fn diff(before: Option<&Value>, after: &Value) -> Plan {
    let empty = Value::Object(Default::default());
    let old = before.unwrap_or(&empty);
    let mut secrets: Vec<String> = Vec::new();
    for snapshot in [old, after] {
        if let Some(map) = snapshot.get("secrets").and_then(Value::as_object) {
            secrets.extend(map.keys().cloned());
        }
    }
    let mut settings = Vec::new();
    for section in ["deploy", "logs", "gate", "secrets", "database"] {
        leaf_changes(section, old.get(section), after.get(section), &mut settings);
    }
    let old_services = old.get("services").and_then(Value::as_object);
    let new_services = after.get("services").and_then(Value::as_object);
    let mut services = Vec::new();
    for (name, new) in new_services.into_iter().flatten() {
        let previous = old_services.and_then(|m| m.get(name));
        services.push(service_change(name, previous, Some(new), &secrets));
    }
    for (name, previous) in old_services.into_iter().flatten() {
        if new_services.is_none_or(|m| !m.contains_key(name)) {
            services.push(service_change(name, Some(previous), None, &secrets));
        }
    }
    Plan {
        environment: after
            .get("environment")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        recorded: before.is_some(),
        settings,
        services,
    }
}

fn service_change(
    name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    secrets: &[String],
) -> ServiceChange {
    let strip = |v: Option<&Value>| {
        v.map(|v| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("env");
            }
            v
        })
    };
    let mut fields = Vec::new();
    if before.is_some() && after.is_some() {
        leaf_changes(
            "",
            strip(before).as_ref(),
            strip(after).as_ref(),
            &mut fields,
        );
    }
    let env_of = |v: Option<&Value>| {
        v.and_then(|v| v.get("env"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (old_env, new_env) = (env_of(before), env_of(after));
    let mut env = Vec::new();
    let mut keys: Vec<&String> = new_env.keys().collect();
    keys.extend(old_env.keys().filter(|k| !new_env.contains_key(*k)));
    for key in keys {
        let b = old_env.get(key).and_then(Value::as_str);
        let a = new_env.get(key).and_then(Value::as_str);
        let action = match (b, a) {
            (None, Some(_)) => Action::Added,
            (Some(_), None) => Action::Removed,
            (x, y) if x != y => Action::Changed,
            _ => continue,
        };
        let masked = is_sensitive(key, a.or(b), secrets);
        let show = |v: Option<&str>| if masked { None } else { v.map(str::to_string) };
        env.push(EnvChange {
            key: key.clone(),
            action,
            before: show(b),
            after: show(a),
            masked,
        });
    }
    let action = match (before, after) {
        (None, _) => Action::Added,
        (_, None) => Action::Removed,
        _ if fields.is_empty() && env.is_empty() => Action::Unchanged,
        _ => Action::Changed,
    };
    ServiceChange {
        name: name.to_string(),
        action,
        fields,
        env,
    }
}

fn leaf_changes(
    prefix: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            for (k, av) in a {
                leaf_changes(&join(prefix, k), b.get(k), Some(av), out);
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    leaf_changes(&join(prefix, k), Some(bv), None, out);
                }
            }
        }
        (b, a) if b != a => {
            let show = |v: Option<&Value>| v.filter(|v| !v.is_null()).map(human);
            let (before, after) = (show(b), show(a));
            if before != after {
                out.push(FieldChange {
                    path: prefix.to_string(),
                    before,
                    after,
                });
            }
        }
        _ => {}
    }
}

/// A value as people write it in `slipway.toml`, not as JSON: `canary`, not `"canary"`;
/// canary steps as `5% → 25% → 100%`; tables as `{ key = value }`.
pub fn human(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => "-".into(),
        Value::Array(items)
            if items.iter().all(|i| i.get("weight").is_some()) && !items.is_empty() =>
        {
            items
                .iter()
                .map(|step| {
                    let mut text = format!("{}%", human(&step["weight"]));
                    match &step["pause"] {
                        Value::String(p) if p == "until-promoted" => {
                            text.push_str(" (pause)");
                        }
                        Value::Object(o) if o.contains_key("for") => {
                            text.push_str(&format!(" (pause {})", human(&o["for"])));
                        }
                        _ => {}
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join(" → ")
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(human).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k} = {}", human(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(services: Value) -> Value {
        json!({"environment": "staging", "secrets": {"STRIPE_KEY": {}}, "services": services})
    }

    #[test]
    fn first_plan_adds_everything() {
        let plan = diff(
            None,
            &env(json!({"web": {"replicas": 2, "env": {"A": "1"}}})),
        );
        assert!(!plan.recorded);
        assert_eq!(plan.services[0].action, Action::Added);
        assert!(plan.has_changes());
    }

    #[test]
    fn changes_are_listed_and_secrets_masked() {
        let before = env(json!({
            "web": {"replicas": 2, "env": {"A": "1", "DB_PASSWORD": "hunter2", "STRIPE_KEY": "sk_1"}},
            "old": {"replicas": 1, "env": {}}
        }));
        let after = env(json!({
            "web": {"replicas": 3, "env": {"A": "2", "DB_PASSWORD": "hunter3", "STRIPE_KEY": "sk_2", "NEW": "x"}}
        }));
        let plan = diff(Some(&before), &after);
        let web = &plan.services[0];
        assert_eq!(web.action, Action::Changed);
        assert_eq!(web.fields[0].path, "replicas");
        assert_eq!(web.fields[0].after.as_deref(), Some("3"));
        let text = serde_json::to_string(&plan).unwrap();
        assert!(!text.contains("hunter"), "{text}");
        assert!(!text.contains("sk_"), "{text}");
        let a = web.env.iter().find(|e| e.key == "A").unwrap();
        assert_eq!(
            (a.before.as_deref(), a.after.as_deref()),
            (Some("1"), Some("2"))
        );
        assert!(
            web.env
                .iter()
                .any(|e| e.key == "NEW" && e.action == Action::Added)
        );
        assert_eq!(plan.services[1].name, "old");
        assert_eq!(plan.services[1].action, Action::Removed);
    }

    #[test]
    fn values_read_as_written_not_as_json() {
        let before = env(json!({"web": {"strategy": {"kind": "rolling", "steps": []}}}));
        let after = env(json!({"web": {"strategy": {"kind": "canary", "steps": [
            {"weight": 5.0, "bake": "3s", "pause": "none"},
            {"weight": 50.0, "bake": "3s", "pause": "until-promoted"},
            {"weight": 100.0, "bake": "3s", "pause": {"for": "1m"}}
        ]}}}));
        let plan = diff(Some(&before), &after);
        let fields = &plan.services[0].fields;
        let kind = fields.iter().find(|f| f.path == "strategy.kind").unwrap();
        assert_eq!(kind.after.as_deref(), Some("canary"));
        let steps = fields.iter().find(|f| f.path == "strategy.steps").unwrap();
        assert_eq!(
            steps.after.as_deref(),
            Some("5% → 50% (pause) → 100% (pause 1m)")
        );
        assert_eq!(steps.before.as_deref(), Some("[]"));
    }

    #[test]
    fn no_change_is_no_change() {
        let snap = env(json!({"web": {"replicas": 2, "env": {"A": "1"}}}));
        let plan = diff(Some(&snap), &snap);
        assert!(!plan.has_changes());
    }
}
