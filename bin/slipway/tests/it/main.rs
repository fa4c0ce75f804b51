//! End-to-end tests of the `slipway` binary: real processes, real sockets, real SQLite.
//!
//! One test binary (ripgrep's habit) with a module per area; [`support`] holds the harness.
//! Every test gets its own project folder, state directory and `127.0.0.1:0` ports.

mod alerts;
mod cli;
mod daemon;
mod deploy;
mod driver;
mod examples;
mod first_contact;
mod integrity;
mod metrics;
mod pipeline;
mod proxy;
mod runtime;
mod slo;
mod support;
