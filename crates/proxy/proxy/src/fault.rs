//! Fault injection per route, switched on and off over the control channel: added delay, and
//! aborts with a status for a share of requests. Chaos experiments and tests use it.

use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to inject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Added before forwarding, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Share of requests (0–100) answered with `abort_status` instead of being forwarded.
    #[serde(default)]
    pub abort_percent: f64,
    /// Status of aborted requests (default 503).
    #[serde(default)]
    pub abort_status: Option<u16>,
}

/// A route's current fault, shared by its requests.
#[derive(Debug, Default)]
pub struct FaultState {
    fault: RwLock<Option<Fault>>,
}

/// What a request should suffer.
pub struct Injected {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Answer with this status instead of forwarding.
    pub abort: Option<u16>,
}

impl FaultState {
    /// Switches the fault on (`Some`) or off.
    pub fn set(&self, fault: Option<Fault>) {
        *self.fault.write().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The current fault.
    pub fn get(&self) -> Option<Fault> {
        self.fault.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Draws what this request gets.
    pub fn draw(&self) -> Option<Injected> {
        let guard = self.fault.read().unwrap_or_else(|e| e.into_inner());
        let fault = guard.as_ref()?;
        let abort = (fault.abort_percent > 0.0 && fastrand::f64() * 100.0 < fault.abort_percent)
            .then(|| fault.abort_status.unwrap_or(503));
        Some(Injected {
            delay: (fault.delay_ms > 0).then(|| Duration::from_millis(fault.delay_ms)),
            abort,
        })
    }
}
