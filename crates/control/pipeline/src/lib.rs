//! Pipelines: build → test → scan → deploy → smoke → monitor, as `[pipeline]` says (or the
//! default pipeline), on a clean checkout of a commit.
//!
//! - [`runner`]: the queue (one run per environment at a time, queued or superseding), cancel,
//!   approve, re-run, recovery after a restart.
//! - `exec`: one run: checkout, stages, jobs in parallel by `needs`, steps with retries and
//!   timeouts, artifacts.
//! - `builtin`: `deploy` (after the environment's gates), `smoke`, `monitor`, `secret-scan`,
//!   `approve`, `require`, `policy`.
//! - [`command`]: `run` steps in their own process group, output to the run's [`log`].
//! - [`secret_scan`]: the scanner and its allow-list.
//! - [`git`]: the system `git`: resolve, checkout, tracked files, heads; [`watcher`] follows a
//!   repository and starts runs on pushes.
//! - [`webhook`]: run reports (Slipway JSON or GitHub commit status); [`dora`]: the four DORA
//!   figures from recorded history.
//!
//! **Invariants:** a run works on its exact commit, never on the working copy; every state
//! change is written before the next step starts; a run never stays `running` across a
//! control-plane restart.

mod builtin;
pub mod command;
pub mod dora;
mod exec;
pub mod git;
pub mod log;
pub mod runner;
pub mod secret_scan;
pub mod state;
pub mod watcher;
pub mod webhook;

pub use runner::{PipelineError, PipelineOptions, Pipelines, RunRequest};
pub use state::RunState;
