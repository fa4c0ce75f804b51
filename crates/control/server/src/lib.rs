//! The control-plane daemon (`slipway up`): it owns a project's state directory, serves the
//! authenticated HTTP API on loopback, and drives the runtime, the proxy and the deploy engine.
//!
//! - [`daemon`]: start-up and shutdown (lock, token, store, listener, `daemon.json`).
//! - [`environments`]: applying the project file to an environment (what `up` records).
//! - `workloads`: one runtime supervisor per environment brought up, on the local-process
//!   driver, and every web service's traffic plan: the platform the deploy engine drives.
//! - `deploys`: starting deploys (from the API, and from `up` when the file changed) and
//!   restoring an environment under the engine.
//! - `dataplane`: runs and re-adopts `slipway proxy`, and pushes it route tables.
//! - `http`: routes, authentication, audit, errors and the event stream.
//!
//! **Invariant:** every route but `/healthz` requires the admin token, and every call that is not
//! a read (`GET`/`HEAD`, and the POSTed queries of Prometheus' API) leaves an audit record,
//! denied ones included.

mod alerts;
pub mod daemon;
mod dataplane;
mod deploys;
pub mod environments;
mod http;
mod metrics;
mod slos;
mod workloads;

pub use daemon::{DaemonError, DaemonOptions, run};
pub use deploys::{UpPlan, up_plan};
pub use http::openapi;
pub use slipway_deploy::how_it_moves;

/// Slipway's version, as the API reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
