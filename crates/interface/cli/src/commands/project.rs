//! Commands on the project file alone: `init`, `validate`, `schema`, `plan`.

use serde_json::json;
use slipway_spec::plan::Action;
use slipway_spec::{LoadError, Project};
use slipway_store::SqliteStore;

use crate::Context;
use crate::error::CliError;
use crate::output;

/// Loads the project file, or explains why it cannot be used (printing every diagnostic).
pub(crate) fn load(ctx: &Context) -> Result<Project, CliError> {
    slipway_spec::load(&ctx.file).map_err(|e| load_error(ctx, e))
}

fn load_error(ctx: &Context, e: LoadError) -> CliError {
    match e {
        LoadError::Missing { path } => CliError::new(format!("there is no {}", path.display()))
            .hint("write one with `slipway init`, or point to yours with `-f FILE`"),
        LoadError::Invalid { report } => CliError::new(format!(
            "{} has {} error(s)",
            ctx.file.display(),
            report.error_count()
        ))
        .detail(report.render())
        .hint("fix the errors above; `slipway schema` lists every key"),
        other => CliError::from_error("cannot load the project", &other),
    }
}

pub(crate) fn init(ctx: &Context, force: bool) -> Result<u8, CliError> {
    if ctx.file.exists() && !force {
        return Err(
            CliError::new(format!("{} already exists", ctx.file.display()))
                .hint("pass --force to overwrite it, or edit it"),
        );
    }
    let dir = ctx
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let starter = slipway_spec::init::starter(dir);
    std::fs::write(&ctx.file, &starter.text)
        .map_err(|e| CliError::from_error(&format!("cannot write {}", ctx.file.display()), &e))?;
    if ctx.json {
        output::json(&json!({ "file": ctx.file, "guessed_from": starter.guessed_from }));
    } else {
        match starter.guessed_from {
            Some(from) => println!(
                "wrote {} (commands guessed from {from})",
                ctx.file.display()
            ),
            None => println!("wrote {} (fill in your start command)", ctx.file.display()),
        }
        println!("next: `slipway validate`, then `slipway up`");
    }
    Ok(0)
}

pub(crate) fn validate(ctx: &Context) -> Result<u8, CliError> {
    let loaded = slipway_spec::load(&ctx.file);
    if ctx.json {
        let (valid, diagnostics, project) = match &loaded {
            Ok(p) => (true, p.warnings.diagnostics.clone(), Some(p)),
            Err(LoadError::Invalid { report }) => (false, report.diagnostics.clone(), None),
            Err(_) => (false, Vec::new(), None),
        };
        if let Err(e @ (LoadError::Missing { .. } | LoadError::Read { .. })) = loaded {
            return Err(load_error(ctx, e));
        }
        output::json(&json!({
            "file": ctx.file,
            "valid": valid,
            "diagnostics": diagnostics,
            "environments": project.map(|p| p.environments()),
            "services": project.map(|p| p.config.services.keys().cloned().collect::<Vec<_>>()),
        }));
        return Ok(if valid { 0 } else { 1 });
    }
    let project = loaded.map_err(|e| load_error(ctx, e))?;
    eprint!("{}", project.warnings.render());
    let services: Vec<&str> = project.config.services.keys().map(String::as_str).collect();
    let environments = project.environments();
    println!(
        "{} is valid: {} service(s) ({}), {} environment(s) ({})",
        ctx.file.display(),
        services.len(),
        services.join(", "),
        environments.len(),
        environments.join(", ")
    );
    Ok(0)
}

pub(crate) fn schema() -> Result<u8, CliError> {
    output::json(slipway_spec::json_schema());
    Ok(0)
}

pub(crate) async fn plan(ctx: &Context, detailed_exitcode: bool) -> Result<u8, CliError> {
    let project = load(ctx)?;
    eprint!("{}", project.warnings.render());
    let environment = ctx
        .env
        .clone()
        .unwrap_or_else(|| project.default_environment());
    project.resolve(&environment).map_err(|e| {
        CliError::new(e.to_string()).hint("pass one of the environments in slipway.toml with --env")
    })?;
    // The same comparison `up` makes: the file (with the environment's `--set` overrides)
    // against the release that runs. Reading the store directly works whether or not the
    // control plane runs (WAL readers do not block it).
    let up = if ctx.state.database().exists() {
        let store = SqliteStore::open(&ctx.state.database())
            .await
            .map_err(|e| CliError::from_error("cannot open the state store", &e))?;
        let up = slipway_server::up_plan(&store, &project, &environment).await;
        store.close().await;
        up.map_err(|e| CliError::new(format!("cannot read what runs: {e}")))?
    } else {
        let resolved = project
            .resolve(&environment)
            .map_err(|e| CliError::new(e.to_string()))?;
        let snapshot = serde_json::to_value(&resolved).expect("a resolved environment serializes");
        slipway_server::UpPlan {
            plan: slipway_spec::plan::diff(None, &snapshot),
            against: None,
            deploys: true,
            why: "nothing runs yet: `slipway up` starts the control plane and deploys the first release"
                .into(),
        }
    };
    if ctx.json {
        output::json(&up);
    } else {
        print_plan(&up, &project, &environment);
    }
    Ok(if detailed_exitcode && up.plan.has_changes() {
        2
    } else {
        0
    })
}

fn print_plan(up: &slipway_server::UpPlan, project: &Project, environment: &str) {
    let plan = &up.plan;
    match &up.against {
        Some(r) => println!(
            "Plan for {} against {r}, the release that runs:",
            plan.environment
        ),
        None => println!("Plan for {} (nothing runs yet):", plan.environment),
    }
    let (mut add, mut change, mut remove) = (0, 0, 0);
    for s in &plan.services {
        let sign = match s.action {
            Action::Added => {
                add += 1;
                "+"
            }
            Action::Removed => {
                remove += 1;
                "-"
            }
            Action::Changed => {
                change += 1;
                "~"
            }
            Action::Unchanged => "=",
        };
        let note = match s.action {
            Action::Added => " (new)",
            Action::Removed => " (removed)",
            Action::Unchanged => " (unchanged)",
            Action::Changed => "",
        };
        println!("  {sign} {}{note}", s.name);
        if s.action == Action::Changed {
            for f in &s.fields {
                println!(
                    "      {}: {} → {}",
                    f.path,
                    output::or_dash(f.before.as_ref()),
                    output::or_dash(f.after.as_ref())
                );
            }
        }
        if s.action != Action::Removed {
            for e in &s.env {
                let values = if e.masked {
                    "(hidden value)".to_string()
                } else {
                    format!(
                        "{} → {}",
                        output::or_dash(e.before.as_ref()),
                        output::or_dash(e.after.as_ref())
                    )
                };
                let verb = match e.action {
                    Action::Added => "added",
                    Action::Removed => "removed",
                    _ => "changed",
                };
                if s.action == Action::Changed {
                    println!("      env {} {verb}: {values}", e.key);
                }
            }
        }
    }
    // Before anything ran, every setting is new; listing them says nothing.
    for f in plan.settings.iter().filter(|_| up.against.is_some()) {
        println!(
            "  ~ {}: {} → {}",
            f.path,
            output::or_dash(f.before.as_ref()),
            output::or_dash(f.after.as_ref())
        );
    }
    if plan.has_changes() {
        println!("{add} to add, {change} to change, {remove} to remove.");
    } else {
        println!("No changes.");
    }
    println!("{}", up.why);
    // How each service would move, so a canary that waits for traffic is no surprise.
    if up.deploys
        && up.against.is_some()
        && let Ok(resolved) = project.resolve(environment)
    {
        for s in plan.services.iter().filter(|s| s.action != Action::Removed) {
            if let Some(spec) = resolved.services.get(&s.name) {
                println!("  {}: {}", s.name, slipway_server::how_it_moves(spec));
            }
        }
    }
}
