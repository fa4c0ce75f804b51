//! The deploy engine: how a new release of an environment replaces the running one.
//!
//! - [`release`]: immutable releases (code version + fully resolved configuration of every
//!   service + secret versions).
//! - [`record`]: the persisted state machine of a deployment.
//! - [`engine`]: starts deployments and rollbacks, takes controls, recovers after a crash.
//! - `strategy/`: recreate, rolling, blue-green and canary, per service.
//! - [`analysis`]: canary against the concurrent baseline, with statistical tests.
//! - [`smoke`]: HTTP smoke checks, before traffic (preview route) and after.
//! - [`platform`]: what the engine drives (sets of instances, traffic plans), implemented by
//!   the control plane.
//!
//! **Invariants:** every step is persisted before it is acted on; the commit (the
//! environment's current release changing) is one write with the deployment's state; traffic
//! only ever points at sets that exist (a set is removed after its traffic has moved and
//! drained); one deployment per environment at a time (the store enforces it).

pub mod analysis;
pub mod engine;
mod finish;
pub mod platform;
pub mod policy;
pub mod record;
pub mod release;
mod run;
pub mod smoke;
mod strategy;

pub use engine::{Action, DeployError, DeployRequest, Engine, code_version, outcome};
pub use platform::{Platform, PlatformError, PoolKey, ServiceTraffic};
pub use record::DeploymentState;
pub use release::{Commit, ReleaseSnapshot, parse_release_id, release_id};
pub use strategy::how_it_moves;
