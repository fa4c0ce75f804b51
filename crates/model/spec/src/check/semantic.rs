//! Rules that the schema cannot express: references between sections, rules that hold only
//! after an environment's overrides are applied, and warnings about configurations that work
//! but probably not as meant (such as a web service without a readiness check).

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use indexmap::IndexMap;

use super::schema::closest;
use super::{KeyPath, Locator};
use crate::diagnostic::{Diagnostic, Level, SourceFile};
use crate::model::{
    CanaryStep, ChannelKind, Config, HealthKind, HealthSpec, Indicator, Service, ServiceKind,
    StrategyKind, StrategySpec,
};
use crate::resolve::{health_kind, merged_services};

/// Where services came from when the file has none: a Procfile, with each service's line.
pub(crate) struct ProcfileOrigin<'a> {
    pub(crate) source: &'a SourceFile,
    pub(crate) lines: HashMap<String, Range<usize>>,
}

pub(crate) struct SemanticChecker<'a, 'd, 'i> {
    config: &'a Config,
    source: &'a SourceFile,
    locator: Locator<'d, 'i>,
    procfile: Option<ProcfileOrigin<'a>>,
    out: Vec<Diagnostic>,
}

impl<'a, 'd, 'i> SemanticChecker<'a, 'd, 'i> {
    pub(crate) fn new(
        config: &'a Config,
        source: &'a SourceFile,
        locator: Locator<'d, 'i>,
        procfile: Option<ProcfileOrigin<'a>>,
    ) -> Self {
        SemanticChecker {
            config,
            source,
            locator,
            procfile,
            out: Vec::new(),
        }
    }

    /// Runs every rule; returns errors and warnings, each reported once.
    pub(crate) fn run(mut self, environments: &[String]) -> Vec<Diagnostic> {
        self.project();
        self.env_names(
            &KeyPath::parse("env"),
            &self.config.env.keys().cloned().collect::<Vec<_>>(),
        );
        self.secrets();
        self.environments();
        // Service rules run once per environment; a finding shared by every environment is
        // reported once, one particular to some names them.
        let mut scoped: Vec<(Diagnostic, Vec<String>)> = Vec::new();
        for env in environments {
            let before = self.out.len();
            match merged_services(self.config, env) {
                Ok(services) => self.services(env, &services),
                Err(e) => {
                    let path = KeyPath::root().key("environments").key(env);
                    self.error_at(
                        &path,
                        format!(
                            "cannot apply the overrides of environment `{env}`: {}",
                            e.message()
                        ),
                        None,
                    );
                }
            }
            for d in self.out.drain(before..).collect::<Vec<_>>() {
                match scoped.iter_mut().find(|(seen, _)| *seen == d) {
                    Some((_, envs)) => envs.push(env.clone()),
                    None => scoped.push((d, vec![env.clone()])),
                }
            }
        }
        for (mut d, envs) in scoped {
            if envs.len() < environments.len() {
                let names: Vec<String> = envs.iter().map(|e| format!("`{e}`")).collect();
                let noun = if envs.len() == 1 {
                    "environment"
                } else {
                    "environments"
                };
                d.message = format!("{} (in {noun} {})", d.message, names.join(", "));
            }
            self.out.push(d);
        }
        self.alerts();
        self.alerting();
        self.metrics();
        self.slos();
        self.incidents();
        self.pipeline();
        self.flags();
        self.channels();
        let mut seen = BTreeSet::new();
        self.out
            .into_iter()
            .filter(|d| seen.insert((d.file.clone(), d.span.start, d.message.clone())))
            .collect()
    }

    fn push(
        &mut self,
        level: Level,
        paths: &[KeyPath],
        path: &KeyPath,
        message: String,
        hint: Option<String>,
    ) {
        let span = self.locator.first_span(paths);
        // Services from a Procfile are reported on their Procfile line.
        if span.is_none()
            && let Some(origin) = &self.procfile
        {
            let service = paths.iter().find_map(|p| {
                let text = p.to_string();
                text.strip_prefix("services.")
                    .map(|rest| rest.split('.').next().unwrap_or_default().to_string())
            });
            if let Some(range) = service.and_then(|s| origin.lines.get(&s)) {
                self.out.push(origin.source.diagnostic(
                    level,
                    range.clone(),
                    path.to_string(),
                    message,
                    hint,
                ));
                return;
            }
        }
        let d =
            self.source
                .diagnostic(level, span.unwrap_or(0..0), path.to_string(), message, hint);
        self.out.push(d);
    }

    fn error_at(&mut self, path: &KeyPath, message: String, hint: Option<String>) {
        self.push(
            Level::Error,
            std::slice::from_ref(path),
            path,
            message,
            hint,
        );
    }

    fn warning_at(&mut self, path: &KeyPath, message: String, hint: Option<String>) {
        self.push(
            Level::Warning,
            std::slice::from_ref(path),
            path,
            message,
            hint,
        );
    }

    fn error(&mut self, paths: &[KeyPath], path: &KeyPath, message: String, hint: Option<String>) {
        self.push(Level::Error, paths, path, message, hint);
    }

    fn warning(
        &mut self,
        paths: &[KeyPath],
        path: &KeyPath,
        message: String,
        hint: Option<String>,
    ) {
        self.push(Level::Warning, paths, path, message, hint);
    }

    /// An error about a reference to a name that does not exist.
    fn unknown_reference(&mut self, path: &KeyPath, what: &str, name: &str, known: &[&str]) {
        let hint = match closest(name, known) {
            Some(best) => Some(format!("did you mean `{best}`?")),
            None if known.is_empty() => Some(format!("no {what} is declared")),
            None => Some(format!("known: {}", known.join(", "))),
        };
        let span_path = path.clone();
        let span = self.locator.value_span(&span_path);
        let message = format!("unknown {what} `{name}` in `{path}`");
        match span {
            Some(span) => self.out.push(self.source.diagnostic(
                Level::Error,
                span,
                path.to_string(),
                message,
                hint,
            )),
            None => self.error_at(path, message, hint),
        }
    }

    fn project(&mut self) {
        if let Some(default) = &self.config.project.default_environment {
            let known: Vec<&str> = self
                .config
                .environments
                .keys()
                .map(String::as_str)
                .collect();
            let implicit_local = known.is_empty() && default == "local";
            if !self.config.environments.contains_key(default) && !implicit_local {
                self.unknown_reference(
                    &KeyPath::parse("project.default_environment"),
                    "environment",
                    default,
                    &known,
                );
            }
        }
        if let Some(listen) = &self.config.control.listen {
            let path = KeyPath::parse("control.listen");
            match listen.parse::<std::net::SocketAddr>() {
                Err(_) => self.error_at(&path,
                    format!("`{listen}` is not an address and port"),
                    Some("write it as \"127.0.0.1:7070\"".into()),
                ),
                Ok(addr) if !addr.ip().is_loopback() => self.warning_at(&path,
                    format!("the control-plane API would listen on `{listen}`, beyond this machine"),
                    Some("keep it on loopback (127.0.0.1) and reach it through an SSH tunnel or a proxy with TLS".into()),
                ),
                Ok(_) => {}
            }
        }
    }

    fn env_names(&mut self, base: &KeyPath, keys: &[String]) {
        for key in keys {
            let valid = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                let path = base.key(key);
                self.error_at(
                    &path,
                    format!("`{key}` is not a valid environment variable name"),
                    Some("use letters, digits and underscores, not starting with a digit".into()),
                );
            }
        }
    }

    fn secrets(&mut self) {
        let names: Vec<String> = self.config.secrets.keys().cloned().collect();
        self.env_names(&KeyPath::parse("secrets"), &names);
        let services: Vec<&str> = self.config.services.keys().map(String::as_str).collect();
        for (name, decl) in &self.config.secrets {
            if let crate::model::SecretDecl::Full(spec) = decl {
                for (i, svc) in spec.services.iter().flatten().enumerate() {
                    if !self.config.services.contains_key(svc) {
                        let path = KeyPath::root()
                            .key("secrets")
                            .key(name)
                            .key("services")
                            .index(i);
                        self.unknown_reference(&path, "service", svc, &services);
                    }
                }
            }
            if self.config.env.contains_key(name) {
                let path = KeyPath::root().key("env").key(name);
                self.error_at(
                    &path,
                    format!(
                        "`{name}` is declared as a secret and also given a plain value in `[env]`"
                    ),
                    Some("remove it from `[env]`; set its value with the secrets store".into()),
                );
            }
        }
    }

    fn environments(&mut self) {
        let envs: Vec<&str> = self
            .config
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        let services: Vec<&str> = self.config.services.keys().map(String::as_str).collect();
        for (name, env) in &self.config.environments {
            let base = KeyPath::root().key("environments").key(name);
            for (i, req) in env.requires.iter().enumerate() {
                if req == name {
                    let path = base.key("requires").index(i);
                    self.error_at(
                        &path,
                        format!("environment `{name}` requires itself"),
                        Some("remove it from `requires`".into()),
                    );
                } else if !self.config.environments.contains_key(req) {
                    self.unknown_reference(
                        &base.key("requires").index(i),
                        "environment",
                        req,
                        &envs,
                    );
                }
            }
            for svc in env.services.keys() {
                if !self.config.services.contains_key(svc) {
                    let path = base.key("services").key(svc);
                    let hint = closest(svc, &services).map(|b| format!("did you mean `{b}`?"));
                    self.error_at(
                        &path,
                        format!("environment `{name}` overrides unknown service `{svc}`"),
                        hint.or_else(|| Some(format!("declare it under `[services.{svc}]` first"))),
                    );
                }
            }
            let keys: Vec<String> = env.env.keys().cloned().collect();
            self.env_names(&base.key("env"), &keys);
        }
        // Promotion chains must not loop; each loop is reported once.
        let mut loops_seen: BTreeSet<Vec<String>> = BTreeSet::new();
        for start in self.config.environments.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            while let Some((at, trail)) = stack.pop() {
                for next in self
                    .config
                    .environments
                    .get(&at)
                    .map(|e| e.requires.clone())
                    .unwrap_or_default()
                {
                    if next == *start && trail.len() > 1 {
                        let path = KeyPath::root()
                            .key("environments")
                            .key(start)
                            .key("requires");
                        let mut members = trail.clone();
                        members.sort();
                        if !loops_seen.insert(members) {
                            stack.clear();
                            break;
                        }
                        let mut cycle = trail.clone();
                        cycle.push(next.clone());
                        self.error_at(
                            &path,
                            format!(
                                "environments require each other in a loop: {}",
                                cycle.join(" → ")
                            ),
                            Some(
                                "remove one of the `requires` entries: promotion goes one way"
                                    .into(),
                            ),
                        );
                        stack.clear();
                        break;
                    }
                    if !trail.contains(&next) {
                        let mut t = trail.clone();
                        t.push(next.clone());
                        stack.push((next, t));
                    }
                }
            }
        }
    }

    /// Rules for services as one environment sees them.
    fn services(&mut self, env: &str, services: &IndexMap<String, Service>) {
        let names: Vec<&str> = services.keys().map(String::as_str).collect();
        let mut ports: HashMap<u16, String> = HashMap::new();
        for (name, s) in services {
            let base = KeyPath::root().key("services").key(name);
            let over = KeyPath::root()
                .key("environments")
                .key(env)
                .key("services")
                .key(name);
            // The place a field is written: the environment's override, else the service.
            let at =
                |field: &str| vec![over.key(field), base.key(field), over.clone(), base.clone()];
            let kind = s.kind.unwrap_or_default();
            let keys: Vec<String> = s.env.keys().cloned().collect();
            self.env_names(&base.key("env"), &keys);
            if s.start.as_deref().is_none_or(|c| c.trim().is_empty()) {
                self.error(
                    &at("start"),
                    &base.key("start"),
                    format!("service `{name}` has no `start` command"),
                    Some("add `start = \"…\"`: the shell command that runs one instance".into()),
                );
            }
            match (kind, s.port) {
                (ServiceKind::Web, None) => self.error(
                    &at("port"),
                    &base.key("port"),
                    format!("web service `{name}` has no public `port`"),
                    Some("add `port = 8080` (the proxy listens there), or set `kind = \"worker\"`".into()),
                ),
                (ServiceKind::Web, Some(0)) => {}
                (ServiceKind::Web, Some(port)) => {
                    if let Some(other) = ports.insert(port, name.clone()) {
                        self.error(
                            &at("port"),
                            &base.key("port"),
                            format!("services `{other}` and `{name}` both use public port {port}"),
                            Some("give each web service its own port".into()),
                        );
                    }
                }
                (_, Some(_)) => self.warning(
                    &at("port"),
                    &base.key("port"),
                    format!("`port` is ignored for {} service `{name}`: only web services get a public port", kind.as_str()),
                    Some("remove `port`, or set `kind = \"web\"`".into()),
                ),
                _ => {}
            }
            match (kind, &s.schedule) {
                (ServiceKind::Cron, None) => self.error(
                    &at("schedule"),
                    &base.key("schedule"),
                    format!("cron service `{name}` has no `schedule`"),
                    Some("add `schedule = \"*/5 * * * *\"`".into()),
                ),
                (ServiceKind::Cron, Some(schedule)) => {
                    if let Err(e) = crate::units::check_cron(schedule) {
                        self.error(
                            &at("schedule"),
                            &base.key("schedule"),
                            e.message,
                            Some(e.hint.into()),
                        );
                    }
                }
                (_, Some(_)) => self.error(
                    &at("schedule"),
                    &base.key("schedule"),
                    format!(
                        "`schedule` only applies to cron services, and `{name}` is a {} service",
                        kind.as_str()
                    ),
                    Some("set `kind = \"cron\"`, or remove `schedule`".into()),
                ),
                _ => {}
            }
            if let Some(tz) = &s.timezone
                && let Err(e) = crate::units::check_timezone(tz)
            {
                self.error(
                    &at("timezone"),
                    &base.key("timezone"),
                    e.message,
                    Some(e.hint.into()),
                );
            }
            for (i, dep) in s.after.iter().flatten().enumerate() {
                if dep == name {
                    let path = base.key("after").index(i);
                    self.error_at(
                        &path,
                        format!("service `{name}` is after itself"),
                        Some("remove it from `after`".into()),
                    );
                } else if !services.contains_key(dep) {
                    self.unknown_reference(&base.key("after").index(i), "service", dep, &names);
                }
            }
            let declared: Vec<&str> = self.config.secrets.keys().map(String::as_str).collect();
            for (i, secret) in s.secrets.iter().flatten().enumerate() {
                if !self.config.secrets.contains_key(secret) {
                    self.unknown_reference(
                        &base.key("secrets").index(i),
                        "secret",
                        secret,
                        &declared,
                    );
                }
            }
            for (field, spec) in [("health", &s.health), ("liveness", &s.liveness)] {
                let Some(spec) = spec else { continue };
                self.health(name, kind, field, spec, &at(field));
            }
            if kind == ServiceKind::Web && s.health.is_none() {
                self.warning(
                    std::slice::from_ref(&base),
                    &base.key("health"),
                    format!("web service `{name}` has no readiness check: new instances get traffic as soon as their port accepts connections"),
                    Some("add `health = \"/health\"` (an HTTP path that answers 2xx when the instance can serve)".into()),
                );
            }
            self.strategy(name, kind, s.strategy.as_ref(), &at("strategy"));
        }
        // `after` must not loop.
        if let Some(cycle) = find_cycle(services) {
            let path = KeyPath::root().key("services").key(&cycle[0]).key("after");
            self.error_at(
                &path,
                format!(
                    "services start after each other in a loop: {}",
                    cycle.join(" → ")
                ),
                Some("remove one of the `after` entries".into()),
            );
        }
    }

    fn health(
        &mut self,
        name: &str,
        kind: ServiceKind,
        field: &str,
        spec: &HealthSpec,
        at: &[KeyPath],
    ) {
        let path = KeyPath::root().key("services").key(name).key(field);
        let (check_kind, check) = match spec {
            HealthSpec::Path(p) => {
                if !p.starts_with('/') {
                    self.error(
                        at,
                        &path,
                        format!("health check path `{p}` of `{name}` must start with `/`"),
                        Some(format!("write \"/{p}\"")),
                    );
                }
                (HealthKind::Http, None)
            }
            HealthSpec::Check(c) => (health_kind(c), Some(c)),
        };
        let needs_port = matches!(check_kind, HealthKind::Http | HealthKind::Tcp);
        if needs_port && kind != ServiceKind::Web {
            self.error(
                at,
                &path,
                format!("`{name}` is a {} service without a `$PORT`, so it cannot have an {} check", kind.as_str(), if check_kind == HealthKind::Http { "HTTP" } else { "TCP" }),
                Some("use `{ command = \"…\" }`, `{ file = \"heartbeat\" }` or `{ type = \"uptime\" }`".into()),
            );
        }
        let Some(check) = check else { return };
        let missing = match check_kind {
            HealthKind::Command if check.command.is_none() => {
                Some(("command", "command = \"pg_isready\""))
            }
            HealthKind::Heartbeat if check.file.is_none() => {
                Some(("file", "file = \"/tmp/heartbeat\""))
            }
            _ => None,
        };
        if let Some((key, example)) = missing {
            self.error(
                at,
                &path,
                format!("this {key} check of `{name}` has no `{key}`"),
                Some(format!("add `{example}`")),
            );
        }
        if let Some(p) = &check.path
            && !p.starts_with('/')
        {
            self.error(
                at,
                &path.key("path"),
                format!("health check path `{p}` of `{name}` must start with `/`"),
                Some(format!("write \"/{p}\"")),
            );
        }
    }

    fn strategy(
        &mut self,
        name: &str,
        kind: ServiceKind,
        spec: Option<&StrategySpec>,
        at: &[KeyPath],
    ) {
        let path = KeyPath::root().key("services").key(name).key("strategy");
        let (strategy_kind, full) = match spec {
            None => return,
            Some(StrategySpec::Kind(k)) => (Some(*k), None),
            Some(StrategySpec::Full(f)) => (f.kind, Some(&**f)),
        };
        if kind != ServiceKind::Web
            && matches!(
                strategy_kind,
                Some(StrategyKind::Canary | StrategyKind::BlueGreen)
            )
        {
            self.error(
                at,
                &path,
                format!("{} service `{name}` gets no traffic, so it cannot use a traffic-shifting strategy", kind.as_str()),
                Some("use \"rolling\" or \"recreate\"; workers move with the release of the web services".into()),
            );
        }
        let Some(steps) = full.and_then(|f| f.steps.as_ref()) else {
            return;
        };
        let mut last = 0.0;
        for (i, step) in steps.iter().enumerate() {
            let weight = match step {
                CanaryStep::Weight(p) => Some(p.percent()),
                CanaryStep::Step(s) => s.weight.map(|p| p.percent()),
            };
            if let Some(w) = weight {
                if w < last {
                    let p = path.key("steps").index(i);
                    self.error_at(&p, format!("canary step {w}% of `{name}` is lower than the step before it ({last}%)"), Some("weights must not decrease; a rollback is automatic".into()));
                }
                last = w;
            }
            if let CanaryStep::Step(s) = step
                && s.weight.is_none()
                && s.pause.is_none()
            {
                let p = path.key("steps").index(i);
                self.error_at(
                    &p,
                    format!(
                        "canary step {} of `{name}` has neither `weight` nor `pause`",
                        i + 1
                    ),
                    Some("write `{ weight = \"25%\" }` or `{ pause = true }`".into()),
                );
            }
        }
    }

    fn alerts(&mut self) {
        let channels: Vec<&str> = self.config.channels.keys().map(String::as_str).collect();
        let alerts: Vec<(String, crate::model::Alert)> = self
            .config
            .alerts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, alert) in &alerts {
            let base = KeyPath::root().key("alerts").key(name);
            self.promql_at(&base.key("expr"), &alert.expr);
            match &alert.recover {
                Some(crate::model::Recover::Expr(e)) => self.promql_at(&base.key("recover"), e),
                Some(crate::model::Recover::Threshold(_))
                    if crate::promql::threshold_comparison(&alert.expr).is_none()
                        && crate::promql::parse(&alert.expr).is_ok() =>
                {
                    self.error(
                            &[base.key("recover")],
                            &base.key("recover"),
                            format!(
                                "alert `{name}` has a recovery threshold, but its `expr` is not a comparison with a number"
                            ),
                            Some(
                                "write `expr = \"A > 5\"` with `recover = 3`, or give `recover` an expression"
                                    .into(),
                            ),
                        );
                }
                _ => {}
            }
            for (key, text) in [
                ("summary", &alert.summary),
                ("description", &alert.description),
            ] {
                if let Some(t) = text {
                    self.template_at(&base.key(key), t);
                }
            }
            for (k, v) in &alert.labels {
                self.template_at(&base.key("labels").key(k), v);
            }
            for (j, ch) in alert.channels.iter().enumerate() {
                if !self.config.channels.contains_key(ch) {
                    self.unknown_reference(
                        &base.key("channels").index(j),
                        "channel",
                        ch,
                        &channels,
                    );
                }
            }
        }
    }

    /// `[alerting]`: its maintenance windows' schedules, time zones and matchers.
    fn alerting(&mut self) {
        let windows: Vec<(String, crate::model::Maintenance)> = self
            .config
            .alerting
            .maintenance
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, w) in &windows {
            let base = KeyPath::root().key("alerting").key("maintenance").key(name);
            if let Err(e) = crate::units::check_cron(&w.schedule) {
                self.error_at(&base.key("schedule"), e.message, Some(e.hint.into()));
            }
            if let Some(tz) = &w.timezone
                && let Err(e) = crate::units::check_timezone(tz)
            {
                self.error_at(&base.key("timezone"), e.message, Some(e.hint.into()));
            }
            for (i, m) in w.matchers.iter().enumerate() {
                if let Err(e) = crate::matcher::Matcher::parse(m) {
                    self.error_at(
                        &base.key("matchers").index(i),
                        e,
                        Some(
                            "write `service=db`, `env!=staging` or `alertname=~\"backup_.*\"`"
                                .into(),
                        ),
                    );
                }
            }
        }
    }

    /// A template at `path`: an error points into the string.
    fn template_at(&mut self, path: &KeyPath, text: &str) {
        if let Err(e) = crate::template::Template::parse(text) {
            self.error_inside(
                path,
                e.offset,
                format!("invalid template: {}", e.message),
                e.hint,
            );
        }
    }

    fn slos(&mut self) {
        let channels: Vec<&str> = self.config.channels.keys().map(String::as_str).collect();
        let services: Vec<&str> = self.config.services.keys().map(String::as_str).collect();
        let slos: Vec<(String, crate::model::Slo)> = self
            .config
            .slos
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, slo) in &slos {
            let base = KeyPath::root().key("slos").key(name);
            let indicator = slo.indicator.unwrap_or_default();
            match &slo.service {
                Some(svc) if !self.config.services.contains_key(svc) => {
                    self.unknown_reference(&base.key("service"), "service", svc, &services);
                }
                None if indicator != Indicator::Ratio => self.error_at(
                    &base,
                    format!("SLO `{name}` measures no service"),
                    Some(format!(
                        "add `service = \"{}\"`, or measure your own series with `indicator = \"ratio\"`",
                        services.first().copied().unwrap_or("web")
                    )),
                ),
                _ => {}
            }
            if slo.objective.percent() >= 100.0 || slo.objective.percent() <= 0.0 {
                self.error(
                    &[base.key("objective")],
                    &base.key("objective"),
                    format!(
                        "SLO `{name}` has objective {}, which leaves no error budget",
                        slo.objective
                    ),
                    Some("use a value such as \"99.9%\"".into()),
                );
            }
            match (indicator, slo.latency) {
                (Indicator::Latency, None) => self.error_at(
                    &base,
                    format!("latency SLO `{name}` has no `latency` threshold"),
                    Some("add `latency = \"256ms\"`".into()),
                ),
                (Indicator::Latency, Some(l)) => {
                    let bucket = crate::slo_buckets::at_most(l.std());
                    if bucket != Some(l.std()) {
                        self.warning_at(
                            &base.key("latency"),
                            format!(
                                "the proxy's latency buckets have no bound at {l}: requests are counted good up to {}",
                                bucket.map_or("none".into(), |b| crate::units::Duration(b).to_string())
                            ),
                            Some(format!(
                                "use a bound: {}",
                                crate::slo_buckets::near(l.std())
                            )),
                        );
                    }
                }
                (_, Some(_)) => self.error_at(
                    &base.key("latency"),
                    format!("`latency` only applies to latency SLOs, and `{name}` is not one"),
                    Some("set `indicator = \"latency\"`, or remove `latency`".into()),
                ),
                _ => {}
            }
            if indicator == Indicator::Ratio {
                if slo.total.is_none() || slo.good.is_some() == slo.bad.is_some() {
                    self.error_at(
                        &base,
                        format!("ratio SLO `{name}` needs `total` and one of `good` or `bad`"),
                        Some("write `good = 'sum(rate(ok_total[{{.window}}]))'` and `total = 'sum(rate(all_total[{{.window}}]))'`".into()),
                    );
                }
                for (key, q) in [
                    ("good", &slo.good),
                    ("bad", &slo.bad),
                    ("total", &slo.total),
                ] {
                    let Some(q) = q else { continue };
                    if !q.contains("{{.window}}") {
                        self.warning_at(
                            &base.key(key),
                            format!("`{key}` of SLO `{name}` has no `{{{{.window}}}}`: every window would read the same"),
                            Some("put `{{.window}}` where the range goes: `rate(x_total[{{.window}}])`".into()),
                        );
                    }
                    self.promql_at(&base.key(key), &q.replace("{{.window}}", "5m"));
                }
            } else {
                for (key, q) in [
                    ("good", &slo.good),
                    ("bad", &slo.bad),
                    ("total", &slo.total),
                ] {
                    if q.is_some() {
                        self.error_at(
                            &base.key(key),
                            format!("`{key}` only applies to ratio SLOs, and `{name}` is not one"),
                            Some("set `indicator = \"ratio\"`, or remove it".into()),
                        );
                    }
                }
            }
            let window = slo.window.map_or(30 * 86_400_000, |w| w.std().as_millis());
            for (i, b) in slo.burn.iter().flatten().enumerate() {
                let at = base.key("burn").index(i);
                if b.short.std() >= b.long.std() {
                    self.error_at(
                        &at.key("short"),
                        format!(
                            "the short window {} is not shorter than the long one {}",
                            b.short, b.long
                        ),
                        Some("the short window is usually a twelfth of the long one".into()),
                    );
                }
                if b.factor <= 0.0 {
                    self.error_at(
                        &at.key("factor"),
                        format!("a burn factor of {} never fires", b.factor),
                        Some("use a factor such as 14.4 (2% of a 30-day budget in an hour)".into()),
                    );
                }
            }
            let longest = match &slo.burn {
                Some(b) => b
                    .iter()
                    .map(|b| b.long.std().as_millis())
                    .max()
                    .unwrap_or(0),
                None => 3 * 86_400_000,
            };
            if window < longest {
                self.error_at(
                    &slo.window.map_or(base.clone(), |_| base.key("window")),
                    format!(
                        "SLO `{name}`'s window ({}) is shorter than its longest burn window ({})",
                        crate::units::Duration(std::time::Duration::from_millis(window as u64)),
                        crate::units::Duration(std::time::Duration::from_millis(longest as u64))
                    ),
                    Some("lengthen `window`, or give shorter `burn` windows".into()),
                );
            }
            for (j, ch) in slo.channels.iter().enumerate() {
                if !self.config.channels.contains_key(ch) {
                    self.unknown_reference(
                        &base.key("channels").index(j),
                        "channel",
                        ch,
                        &channels,
                    );
                }
            }
        }
    }

    fn incidents(&mut self) {
        let base = KeyPath::root().key("incidents");
        let channels: Vec<&str> = self.config.channels.keys().map(String::as_str).collect();
        for (j, ch) in self.config.incidents.channels.iter().flatten().enumerate() {
            if !self.config.channels.contains_key(ch) {
                self.unknown_reference(&base.key("channels").index(j), "channel", ch, &channels);
            }
        }
    }

    fn pipeline(&mut self) {
        let Some(pipeline) = &self.config.pipeline else {
            return;
        };
        let stages: Vec<String> = pipeline.stages.clone().unwrap_or_else(|| {
            crate::DEFAULT_STAGES
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let stage_refs: Vec<&str> = stages.iter().map(String::as_str).collect();
        let jobs: Vec<&str> = pipeline.jobs.keys().map(String::as_str).collect();
        let envs: Vec<&str> = self
            .config
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        for (name, job) in &pipeline.jobs {
            let base = KeyPath::root().key("pipeline").key("jobs").key(name);
            if !stages.contains(&job.stage) {
                self.unknown_reference(&base.key("stage"), "stage", &job.stage, &stage_refs);
            }
            for (i, need) in job.needs.iter().enumerate() {
                if !pipeline.jobs.contains_key(need) || need == name {
                    self.unknown_reference(&base.key("needs").index(i), "job", need, &jobs);
                }
            }
            if let Some(env) = job.when.as_ref().and_then(|w| w.environment.as_ref())
                && !self.config.environments.contains_key(env)
            {
                self.unknown_reference(
                    &base.key("when").key("environment"),
                    "environment",
                    env,
                    &envs,
                );
            }
            if job.steps.is_empty() {
                self.error_at(
                    &base,
                    format!("job `{name}` has no steps"),
                    Some("add `steps = [{ run = \"…\" }]`".into()),
                );
            }
            for (i, step) in job.steps.iter().enumerate() {
                let p = base.key("steps").index(i);
                match (&step.run, &step.uses) {
                    (None, None) => self.error_at(
                        &p,
                        format!(
                            "step {} of job `{name}` has neither `run` nor `uses`",
                            i + 1
                        ),
                        Some("add `run = \"…\"` or `uses = \"deploy\"`".into()),
                    ),
                    (Some(_), Some(_)) => self.error_at(
                        &p,
                        format!("step {} of job `{name}` has both `run` and `uses`", i + 1),
                        Some("split it into two steps".into()),
                    ),
                    _ => {}
                }
                if let (Some(uses), Some(with)) = (step.uses, &step.with)
                    && let Err(why) = crate::pipeline::check_with(uses, with)
                {
                    self.error_at(
                        &p.key("with"),
                        format!(
                            "`with` of step {} of job `{name}` is not right: {why}",
                            i + 1
                        ),
                        Some("the README's Pipelines section lists the settings of each built-in step".into()),
                    );
                }
                if let (Some(crate::model::BuiltinStep::Require), Some(with)) =
                    (step.uses, &step.with)
                    && let Some(env) = with.get("environment").and_then(|v| v.as_str())
                    && !self.config.environments.contains_key(env)
                {
                    self.unknown_reference(
                        &p.key("with").key("environment"),
                        "environment",
                        env,
                        &envs,
                    );
                }
            }
        }
    }

    fn flags(&mut self) {
        for (name, flag) in &self.config.flags {
            let base = KeyPath::root().key("flags").key(name);
            let variants: Vec<String> = match &flag.variants {
                Some(v) => v.keys().cloned().collect(),
                None => vec!["on".into(), "off".into()],
            };
            if let Some(default) = &flag.default
                && !variants.contains(default)
            {
                let refs: Vec<&str> = variants.iter().map(String::as_str).collect();
                self.unknown_reference(&base.key("default"), "variant", default, &refs);
            }
        }
    }

    /// A PromQL expression at `path`: a syntax error points into the string, at the token the
    /// parser could not take.
    fn promql_at(&mut self, path: &KeyPath, expr: &str) {
        if let Err(e) = crate::promql::parse(expr) {
            self.error_inside(
                path,
                e.offset,
                format!("invalid PromQL: {}", e.message),
                "see https://prometheus.io/docs/prometheus/latest/querying/basics/".into(),
            );
        }
    }

    /// An error at byte `offset` of the string value at `path` (the character there marked).
    fn error_inside(&mut self, path: &KeyPath, offset: usize, message: String, hint: String) {
        let span = self.locator.value_span(path).map(|r| {
            let raw = &self.source.text[r.clone()];
            let at = r.start + raw_offset(raw, offset);
            at..(at + 1).min(r.end.max(at + 1))
        });
        let d = self.source.diagnostic(
            Level::Error,
            span.unwrap_or(0..0),
            path.to_string(),
            message,
            Some(hint),
        );
        self.out.push(d);
    }

    fn metrics(&mut self) {
        let m = &self.config.metrics;
        let valid_name = |n: &str| {
            let mut chars = n.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut names: Vec<&str> = Vec::new();
        for (i, t) in m.targets.iter().enumerate() {
            let base = KeyPath::root().key("metrics").key("targets").index(i);
            if names.contains(&t.name.as_str()) {
                self.error_at(
                    &base.key("name"),
                    format!("two metrics targets are named `{}`", t.name),
                    Some("the name is the `job` label of its series: make it unique".into()),
                );
            }
            names.push(&t.name);
            if t.url.is_none() && t.urls.is_empty() {
                self.error_at(
                    &base,
                    format!("metrics target `{}` has no `url`", t.name),
                    Some(
                        "add `url = \"http://127.0.0.1:9187/metrics\"` (or `urls = [...]` for several instances of one job)"
                            .into(),
                    ),
                );
            }
            let mut seen: Vec<&str> = Vec::new();
            for (key, url) in t.url.iter().map(|u| (base.key("url"), u)).chain(
                t.urls
                    .iter()
                    .enumerate()
                    .map(|(j, u)| (base.key("urls").index(j), u)),
            ) {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.len() > "http://".len();
                if !ok {
                    self.error_at(
                        &key,
                        format!("`{url}` is not an http(s) URL"),
                        Some(
                            "write the exporter's address, e.g. \"http://127.0.0.1:9187/metrics\""
                                .into(),
                        ),
                    );
                } else if seen.contains(&url.as_str()) {
                    self.error_at(
                        &key,
                        format!("`{url}` is listed twice"),
                        Some("each URL is one instance: list it once".into()),
                    );
                }
                seen.push(url);
            }
        }
        let is_url = |u: &str| {
            (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "https://".len()
        };
        if let Some(url) = &m.remote_write
            && !is_url(url)
        {
            self.error_at(
                &KeyPath::root().key("metrics").key("remote_write"),
                format!("`{url}` is not an http(s) URL"),
                Some(
                    "write the receiver's endpoint, e.g. \"http://127.0.0.1:9090/api/v1/write\""
                        .into(),
                ),
            );
        }
        if let Some(b) = &m.backend
            && !is_url(&b.prometheus)
        {
            self.error_at(
                &KeyPath::root()
                    .key("metrics")
                    .key("backend")
                    .key("prometheus"),
                format!("`{}` is not an http(s) URL", b.prometheus),
                Some("write the server's base URL, e.g. \"http://127.0.0.1:9090\"".into()),
            );
        }
        for (i, r) in m.rules.iter().enumerate() {
            let base = KeyPath::root().key("metrics").key("rules").index(i);
            if !valid_name(&r.record) {
                self.error_at(
                    &base.key("record"),
                    format!("`{}` is not a metric name", r.record),
                    Some("use letters, digits, `_` and `:`, as in `job:http_errors:rate5m`".into()),
                );
            }
            self.promql_at(&base.key("expr"), &r.expr);
        }
        for (name, service) in &self.config.services {
            let Some(sm) = &service.metrics else { continue };
            let base = KeyPath::root().key("services").key(name).key("metrics");
            if let Some(path) = &sm.path
                && !path.starts_with('/')
            {
                self.error_at(
                    &base.key("path"),
                    format!("metrics path `{path}` of `{name}` must start with `/`"),
                    Some(format!("write \"/{path}\"")),
                );
            }
            if service.kind.unwrap_or_default() != ServiceKind::Web && sm.port.is_none() {
                self.error_at(
                    &base,
                    format!("`{name}` has no `$PORT`, so its metrics need a `port`"),
                    Some("add `port = 9100` (where the process serves /metrics)".into()),
                );
            }
        }
    }

    fn channels(&mut self) {
        for (name, channel) in &self.config.channels {
            let base = KeyPath::root().key("channels").key(name);
            let needs_url = matches!(
                channel.kind,
                ChannelKind::Webhook
                    | ChannelKind::Slack
                    | ChannelKind::Pagerduty
                    | ChannelKind::Telegram
                    | ChannelKind::Alertmanager
            );
            if needs_url && channel.url.is_none() && channel.secret.is_none() {
                self.error_at(
                    &base,
                    format!("channel `{name}` has neither `url` nor `secret`"),
                    Some(
                        "add `secret = \"SLACK_WEBHOOK_URL\"` to keep the URL out of the file"
                            .into(),
                    ),
                );
            }
            if channel.kind == ChannelKind::Email && channel.to.is_empty() {
                self.error_at(
                    &base,
                    format!("email channel `{name}` has no recipients"),
                    Some("add `to = [\"oncall@example.com\"]`".into()),
                );
            }
            if let Some(smtp) = &channel.smtp
                && channel.kind == ChannelKind::Email
                && crate::model::smtp_address(smtp).is_none()
            {
                self.error_at(
                    &base.key("smtp"),
                    format!("`{smtp}` is not an SMTP server's `host:port`"),
                    Some("write it as `smtp.example.com:587`".into()),
                );
            }
            if channel.kind == ChannelKind::Email {
                let bad: Vec<(KeyPath, String)> = channel
                    .to
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (base.key("to").index(i), a))
                    .chain(channel.from.iter().map(|a| (base.key("from"), a)))
                    .filter(|(_, a)| !a.contains('@'))
                    .map(|(p, a)| (p, a.clone()))
                    .collect();
                for (path, a) in bad {
                    self.error_at(
                        &path,
                        format!("`{a}` is not an email address"),
                        Some(
                            "write it as `oncall@example.com` or `On call <oncall@example.com>`"
                                .into(),
                        ),
                    );
                }
            }
            if channel.kind == ChannelKind::Email
                && channel.user.is_some()
                && channel.secret.is_none()
            {
                self.error_at(
                    &base.key("user"),
                    format!(
                        "email channel `{name}` logs in as `{}` with no password",
                        channel.user.as_deref().unwrap_or_default()
                    ),
                    Some("add `secret = \"SMTP_PASSWORD\"`, a secret holding the password".into()),
                );
            }
            if channel.kind == ChannelKind::Email && channel.smtp.is_none() {
                self.error_at(
                    &base,
                    format!("email channel `{name}` has no SMTP server"),
                    Some("add `smtp = \"smtp.example.com:587\"`".into()),
                );
            }
            if channel.kind == ChannelKind::Slack
                && channel.chat.is_some()
                && channel.secret.is_none()
            {
                self.error_at(
                    &base.key("chat"),
                    format!("slack channel `{name}` writes to a chat with no bot token"),
                    Some("add `secret = \"SLACK_BOT_TOKEN\"`, a secret holding the bot's `xoxb-` token (or drop `chat` and use an incoming webhook `url`)".into()),
                );
            }
            if channel.kind == ChannelKind::Telegram && channel.chat.is_none() {
                self.error_at(
                    &base,
                    format!("telegram channel `{name}` has no chat"),
                    Some("add `chat = \"-1001234567890\"` (the chat id the bot writes to)".into()),
                );
            }
            if let Some(secret) = &channel.secret
                && !self.config.secrets.contains_key(secret)
            {
                let declared: Vec<&str> = self.config.secrets.keys().map(String::as_str).collect();
                self.unknown_reference(&base.key("secret"), "secret", secret, &declared);
            }
        }
    }
}

/// A loop in `after`, as the list of services around it.
fn find_cycle(services: &IndexMap<String, Service>) -> Option<Vec<String>> {
    fn visit(
        name: &str,
        services: &IndexMap<String, Service>,
        state: &mut HashMap<String, u8>,
        trail: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(name) {
            Some(1) => {
                let start = trail.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = trail[start..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(name.to_string(), 1);
        trail.push(name.to_string());
        for dep in services
            .get(name)
            .and_then(|s| s.after.clone())
            .unwrap_or_default()
        {
            if dep != name
                && services.contains_key(&dep)
                && let Some(c) = visit(&dep, services, state, trail)
            {
                return Some(c);
            }
        }
        trail.pop();
        state.insert(name.to_string(), 2);
        None
    }
    let mut state = HashMap::new();
    for name in services.keys() {
        if let Some(c) = visit(name, services, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Where the `offset`-th byte of a TOML string's value is in its source (`raw`, quotes
/// included): escapes in a basic string take more source than value.
fn raw_offset(raw: &str, offset: usize) -> usize {
    let (quote, escapes) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else {
        (1, raw.starts_with('"'))
    };
    let body = &raw[quote.min(raw.len())..];
    let mut value = 0;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if value >= offset {
            return quote + i;
        }
        if escapes && c == '\\' {
            let esc = chars.next().map(|(_, e)| e);
            value += match esc {
                Some('u') => {
                    for _ in 0..4 {
                        chars.next();
                    }
                    1
                }
                Some('U') => {
                    for _ in 0..8 {
                        chars.next();
                    }
                    1
                }
                _ => 1,
            };
        } else {
            value += c.len_utf8();
        }
    }
    raw.len()
}
