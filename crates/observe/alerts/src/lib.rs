//! Alerts: rules written in PromQL ([`rule`]), evaluated against any metrics back-end, each
//! label set an alert walking the state machine of [`state`] (inactive → pending → firing →
//! resolved, with `for`, `keep_firing_for` and hysteresis), whose transitions become
//! notifications, sent through the channels of [`notify`], [`email`] and [`slack`].

pub mod email;
pub mod engine;
pub mod eval;
pub mod notify;
pub mod route;
pub mod rule;
pub mod slack;
pub mod state;
