//! One module per group of commands; [`run`] dispatches.

mod alerts;
pub(crate) mod daemon;
mod demo;
mod deploy;
mod metrics;
mod observe;
mod pipeline;
mod project;
mod slo;

use clap::CommandFactory;
use serde_json::json;

use crate::Context;
use crate::args::{Cli, Command};
use crate::error::CliError;

/// Runs a command; `Ok` carries the exit status.
pub(crate) async fn run(ctx: &Context, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Init { force } => project::init(ctx, force),
        Command::Validate => project::validate(ctx),
        Command::Schema => project::schema(),
        Command::Plan { detailed_exitcode } => project::plan(ctx, detailed_exitcode).await,
        Command::Up(args) => daemon::up(ctx, args).await,
        Command::Down => daemon::down(ctx).await,
        Command::Status => observe::status(ctx).await,
        Command::Events { follow, limit } => observe::events(ctx, follow, limit).await,
        Command::Audit { limit, action } => observe::audit(ctx, limit, action).await,
        Command::Annotate { message } => observe::annotate(ctx, message).await,
        Command::Logs(args) => observe::logs(ctx, args).await,
        Command::Proxy(args) => daemon::proxy(args).await,
        Command::Cron(crate::args::CronCommand::Run { name }) => {
            observe::cron_run(ctx, &name).await
        }
        Command::Deploy(args) => deploy::deploy(ctx, args).await,
        Command::Releases { action } => deploy::releases(ctx, action).await,
        Command::Deployments { limit } => deploy::deployments(ctx, limit).await,
        Command::Rollback {
            to,
            reason,
            no_wait,
        } => deploy::rollback(ctx, to, reason, no_wait).await,
        Command::Promote { full } => deploy::control(ctx, "promote", json!({ "full": full })).await,
        Command::Pause => deploy::control(ctx, "pause", json!({})).await,
        Command::Resume => deploy::control(ctx, "resume", json!({})).await,
        Command::Abort { reason } => {
            deploy::control(ctx, "abort", json!({ "reason": reason })).await
        }
        Command::Metrics(cmd) => metrics::metrics(ctx, cmd).await,
        Command::Alerts { cmd } => alerts::alerts(ctx, cmd).await,
        Command::Slo { cmd } => slo::slo(ctx, cmd).await,
        Command::Silence(cmd) => alerts::silence(ctx, cmd).await,
        Command::Demo { keep } => demo::demo(ctx, keep).await,
        Command::Pipeline(cmd) => pipeline::pipeline(ctx, cmd).await,
        Command::Approve { run } => pipeline::approve(ctx, run).await,
        Command::Freeze {
            environment,
            reason,
        } => pipeline::freeze(ctx, environment, Some(reason)).await,
        Command::Unfreeze { environment } => pipeline::freeze(ctx, environment, None).await,
        Command::Dora { days } => pipeline::dora(ctx, days).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "slipway",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}
