//! The runtime-driver contract: what the supervisor needs from anything that runs instances.
//!
//! A driver starts an instance from an [`InstanceSpec`], stops it with a signal and a grace
//! period, reports whether it still runs, reads its logs, and finds the instances it started
//! before the control plane restarted ([`Driver::list`]), so they can be re-adopted. The local
//! process driver is the embedded default; Docker (image, ports, volumes, limits) and Kubernetes
//! drivers satisfy the same contract, checked by the compliance suite (`compliance` feature).

use std::path::PathBuf;

use async_trait::async_trait;
use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use slipway_spec::model::{Resources, Signal};

use crate::logs::{LogFilter, LogRecord};

/// Everything needed to start one instance. Secret values are never part of it except inside
/// `env`, which a driver hands to the process and nowhere else.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// Unique id, e.g. `web-0-3f9a`.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Environment name.
    pub environment: String,
    /// Release id the instance runs.
    pub release: String,
    /// Replica slot (0-based); a replacement takes the slot of the instance it replaces.
    pub slot: u32,
    /// Shell command.
    pub command: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// The composed environment (project → environment → service → secrets → injected).
    pub env: IndexMap<String, String>,
    /// Names of `env` keys whose values are secret: redacted from every log line.
    pub secret_keys: Vec<String>,
    /// The instance's `$PORT`, if it serves one.
    pub port: Option<u16>,
    /// Heartbeat file name, relative to the instance's run directory
    /// (`$SLIPWAY_HEARTBEAT_FILE` tells the instance where it is).
    pub heartbeat: Option<String>,
    /// Log rotation.
    pub logs: LogPolicy,
    /// Fingerprint of the service spec and release the instance was started from; a
    /// re-adopted instance whose fingerprint differs is outdated.
    pub fingerprint: String,
    /// Container image (container drivers only).
    pub image: Option<String>,
    /// Resource limits (container drivers enforce them).
    pub resources: Option<Resources>,
}

/// When log files rotate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// Bytes before rotation.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_size: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// A process as the kernel knows it: a pid is only the same process while its start time
/// (clock ticks since boot) is the same, so a recycled pid is never mistaken for ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// A started instance, as recorded by its driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique id.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Environment name.
    pub environment: String,
    /// Release id.
    pub release: String,
    /// Replica slot.
    pub slot: u32,
    /// `$PORT`.
    pub port: Option<u16>,
    /// Spec fingerprint.
    pub fingerprint: String,
    /// The instance's main process; its process group has the same id.
    pub process: ProcessIdentity,
    /// The process that holds its output pipes (the local driver's shim), if any.
    pub keeper: Option<ProcessIdentity>,
    /// When it started.
    pub started_at: Timestamp,
    /// Directory of its files (heartbeat, logs).
    pub run_dir: PathBuf,
}

/// How an instance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// When.
    pub at: Timestamp,
}

impl Exit {
    /// An end nobody saw: neither status nor signal is known.
    pub fn vanished() -> Self {
        Exit {
            code: None,
            signal: None,
            at: Timestamp::now(),
        }
    }

    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit status 3", "killed by SIGKILL", "vanished".
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(s) => format!("killed by {}", s.as_str()),
                Err(_) => format!("killed by signal {sig}"),
            },
            (None, None) => "vanished without an exit status".to_string(),
        }
    }
}

/// What a driver sees of an instance now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Still running.
    Running,
    /// It ended.
    Exited(Exit),
}

/// An instance found on start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Its record.
    pub instance: Instance,
    /// Whether it can be adopted.
    pub verdict: Verdict,
}

/// Whether a found instance is ours to adopt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Running, and its pid and start time match the record.
    Running,
    /// It ended while nobody watched.
    Exited(Exit),
    /// The recorded pid now belongs to another process: never signal it.
    Recycled,
}

/// CPU and memory of an instance (all processes of its group).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time used so far, in milliseconds (user + system).
    pub cpu_ms: u64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Processes in the group.
    pub processes: u32,
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The spec asks for something this driver cannot do.
    #[error("the {driver} driver cannot {what}")]
    Unsupported {
        /// Driver name.
        driver: &'static str,
        /// What.
        what: String,
    },
    /// The instance did not start.
    #[error("cannot start {id}: {reason}")]
    Start {
        /// Instance id.
        id: String,
        /// Why.
        reason: String,
    },
    /// File or process I/O failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DriverError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Runs instances. See the module docs.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short name (`process`, `docker`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Starts an instance; returns once its process exists (not once it is healthy).
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, DriverError>;

    /// Sends `signal` to the instance's whole process group, waits up to `grace` for it to
    /// end, then kills what is left. Returns how the main process ended.
    async fn stop(
        &self,
        instance: &Instance,
        signal: Signal,
        grace: std::time::Duration,
    ) -> Result<Exit, DriverError>;

    /// Whether it still runs.
    async fn observe(&self, instance: &Instance) -> Result<Observed, DriverError>;

    /// Resolves when the instance ends (at once if it has), without polling where the
    /// platform allows.
    async fn wait(&self, instance: &Instance) -> Result<Exit, DriverError>;

    /// Every instance this driver started and has not [`removed`](Driver::remove), with a
    /// verdict on each (used to re-adopt instances after a control-plane restart).
    async fn list(&self) -> Result<Vec<Found>, DriverError>;

    /// Forgets an ended instance (its logs stay readable until pruned).
    async fn remove(&self, instance: &Instance) -> Result<(), DriverError>;

    /// CPU and memory now, if it runs.
    async fn usage(&self, instance: &Instance) -> Option<Usage>;

    /// Log records of a service's instances (current and recent), oldest first.
    async fn logs(&self, service: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, DriverError>;
}

/// Maps the spec's stop signal to the kernel's.
pub fn signal_of(signal: Signal) -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal as S;
    match signal {
        Signal::Term => S::SIGTERM,
        Signal::Int => S::SIGINT,
        Signal::Quit => S::SIGQUIT,
        Signal::Hup => S::SIGHUP,
        Signal::Usr1 => S::SIGUSR1,
        Signal::Usr2 => S::SIGUSR2,
        Signal::Winch => S::SIGWINCH,
    }
}
