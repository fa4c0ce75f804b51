//! The local-process driver, the embedded default: each instance is a shell command in its own
//! process group, started through a [shim](shim) that survives the control plane.
//!
//! Every instance has a directory `ROOT/ID/` holding `instance.json` (its record), the shim's
//! `shim.json`, `child.json` and `exit.json`, its logs, and its heartbeat file. The directory is
//! the source of truth for re-adoption: a pid is adopted only if the process with that pid
//! started at the recorded time.

pub mod proc;
pub mod shim;
pub mod strays;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use nix::sys::signal::{Signal as KernelSignal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_spec::model::Signal;
use tokio::time::Instant;

use crate::driver::{
    Driver, DriverError, Exit, Found, Instance, InstanceSpec, Observed, ProcessIdentity, Usage,
    Verdict, signal_of,
};
use crate::logs::{self, LogFilter, LogRecord};

const INSTANCE_FILE: &str = "instance.json";
const REMOVED_FILE: &str = "removed";
const SHIM_LOG: &str = "shim.log";
/// Ended instances whose logs are kept per service.
const KEEP_REMOVED: usize = 10;

/// How to start the shim: a program and arguments; the instance directory is appended.
/// For the `slipway` binary this is `slipway __shim`.
#[derive(Clone, Debug)]
pub struct ShimCommand {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the directory.
    pub args: Vec<String>,
}

impl ShimCommand {
    /// `program args… DIR`.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        ShimCommand {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct LocalDriver {
    root: PathBuf,
    shim: ShimCommand,
    /// Instances this driver is starting right now: their records are incomplete on purpose,
    /// and [`Driver::list`] must not take them for leftovers of a dead control plane.
    starting: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Removes an id from the starting set when a start ends, however it ends.
struct Starting {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    id: String,
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Writes JSON to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl LocalDriver {
    /// A driver keeping instance directories under `root`.
    pub fn new(root: impl Into<PathBuf>, shim: ShimCommand) -> Self {
        let root = root.into();
        LocalDriver {
            // Instances run in their own directories: paths handed to them must be absolute.
            root: std::path::absolute(&root).unwrap_or(root),
            shim,
            starting: Default::default(),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn exit_of(&self, instance: &Instance) -> Option<Exit> {
        read_json(&instance.run_dir.join(shim::EXIT_FILE))
    }

    /// The exit the shim records once it has drained the output (`fallback` if the shim is
    /// gone without recording one).
    async fn recorded_exit(&self, instance: &Instance, fallback: Exit) -> Exit {
        let keeper_alive = || instance.keeper.as_ref().is_some_and(proc::is_alive);
        wait_until(Instant::now() + Duration::from_secs(5), || {
            self.exit_of(instance).is_some() || !keeper_alive()
        })
        .await;
        self.exit_of(instance).unwrap_or(fallback)
    }

    /// Directories of instances, with their records, removed ones included.
    fn records(&self) -> Vec<(PathBuf, Instance, bool)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                let instance: Instance = read_json(&dir.join(INSTANCE_FILE))?;
                let removed = dir.join(REMOVED_FILE).exists();
                Some((dir, instance, removed))
            })
            .collect()
    }

    fn prune(&self, service: &str) {
        let mut removed: Vec<(PathBuf, Timestamp)> = self
            .records()
            .into_iter()
            .filter(|(_, i, removed)| *removed && i.service == service)
            .map(|(dir, i, _)| (dir, i.started_at))
            .collect();
        if removed.len() > KEEP_REMOVED {
            removed.sort_by_key(|(_, t)| *t);
            for (dir, _) in &removed[..removed.len() - KEEP_REMOVED] {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pidfd for `who`, if it still runs as the same process (checked after opening, so the
/// descriptor is known to refer to it).
fn pidfd(who: &ProcessIdentity) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(who.pid).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    proc::is_alive(who).then_some(fd)
}

/// Where pidfds are unavailable: look every 250ms.
async fn poll_until_gone(who: &ProcessIdentity) {
    while proc::is_alive(who) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pgid(instance: &Instance) -> Pid {
    Pid::from_raw(i32::try_from(instance.process.pid).unwrap_or(i32::MAX))
}

#[async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, DriverError> {
        if let Some(image) = &spec.image {
            return Err(DriverError::Unsupported {
                driver: "process",
                what: format!("run image `{image}`; remove `image` or use a container driver"),
            });
        }
        self.starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id.clone());
        let _starting = Starting {
            set: self.starting.clone(),
            id: spec.id.clone(),
        };
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DriverError::io(format!("create {}", dir.display()), e))?;
        write_json(
            &dir.join(shim::CONFIG_FILE),
            &shim::ShimConfig {
                command: spec.command.clone(),
                cwd: std::path::absolute(&spec.cwd).unwrap_or(spec.cwd.clone()),
                secret_keys: spec.secret_keys.clone(),
                logs: spec.logs,
            },
        )
        .map_err(|e| DriverError::io("write the shim's configuration", e))?;
        // The record exists before the process does, so a control plane that dies at any
        // point of the start leaves something the next one can find and clean up.
        let mut instance = Instance {
            id: spec.id.clone(),
            service: spec.service.clone(),
            environment: spec.environment.clone(),
            release: spec.release.clone(),
            slot: spec.slot,
            port: spec.port,
            fingerprint: spec.fingerprint.clone(),
            process: ProcessIdentity {
                pid: 0,
                start_ticks: 0,
            },
            keeper: None,
            started_at: Timestamp::now(),
            run_dir: dir.clone(),
        };
        let record = |instance: &Instance| {
            write_json(&dir.join(INSTANCE_FILE), instance)
                .map_err(|e| DriverError::io("record the instance", e))
        };
        record(&instance)?;
        let shim_log = std::fs::File::create(dir.join(SHIM_LOG))
            .map_err(|e| DriverError::io("create the shim log", e))?;
        let mut command = tokio::process::Command::new(&self.shim.program);
        command
            .args(&self.shim.args)
            .arg(&dir)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&dir)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(
                shim_log
                    .try_clone()
                    .map_err(|e| DriverError::io("shim log", e))?,
            )
            .stderr(shim_log);
        if let Some(file) = &spec.heartbeat {
            command.env("SLIPWAY_HEARTBEAT_FILE", dir.join(file));
        }
        let mut shim_process = command.spawn().map_err(|e| DriverError::Start {
            id: spec.id.clone(),
            reason: format!("cannot run the shim {}: {e}", self.shim.program.display()),
        })?;
        instance.keeper = proc::identity(shim_process.id().unwrap_or(0));
        record(&instance)?;
        let child_file = dir.join(shim::CHILD_FILE);
        let deadline = Instant::now() + Duration::from_secs(10);
        instance.process = loop {
            if let Some(child) = read_json(&child_file) {
                break child;
            }
            if let Ok(Some(status)) = shim_process.try_wait() {
                // It may have written child.json just before exiting (a very short command).
                if let Some(child) = read_json(&child_file) {
                    break child;
                }
                let log = std::fs::read_to_string(dir.join(SHIM_LOG)).unwrap_or_default();
                let _ = std::fs::write(dir.join(REMOVED_FILE), b"");
                return Err(DriverError::Start {
                    id: spec.id.clone(),
                    reason: format!("the shim exited ({status}): {}", log.trim()),
                });
            }
            if Instant::now() >= deadline {
                let _ = shim_process.start_kill();
                let _ = std::fs::write(dir.join(REMOVED_FILE), b"");
                return Err(DriverError::Start {
                    id: spec.id.clone(),
                    reason: "the shim did not start the instance within 10s".to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The control plane reaps its own shims; adopted ones are reaped by init.
        tokio::spawn(async move {
            let _ = shim_process.wait().await;
        });
        record(&instance)?;
        Ok(instance)
    }

    async fn stop(
        &self,
        instance: &Instance,
        signal: Signal,
        grace: Duration,
    ) -> Result<Exit, DriverError> {
        let group = instance.process.pid;
        // A group whose leader's pid is still its id is ours: Linux never reuses a pid that
        // is still some group's id.
        let ours = |i: &Instance| proc::is_alive(&i.process) || proc::group_exists(group);
        if group != 0 && ours(instance) {
            let _ = killpg(pgid(instance), signal_of(signal));
            let gone = wait_until(Instant::now() + grace, || !proc::group_exists(group)).await;
            if !gone {
                tracing::info!(instance = %instance.id, "grace period over; killing the process group");
                let _ = killpg(pgid(instance), KernelSignal::SIGKILL);
                wait_until(Instant::now() + Duration::from_secs(5), || {
                    !proc::group_exists(group)
                })
                .await;
            }
        }
        Ok(self
            .recorded_exit(
                instance,
                Exit {
                    signal: Some(KernelSignal::SIGKILL as i32),
                    ..Exit::vanished()
                },
            )
            .await)
    }

    async fn observe(&self, instance: &Instance) -> Result<Observed, DriverError> {
        if let Some(exit) = self.exit_of(instance) {
            return Ok(Observed::Exited(exit));
        }
        if proc::is_alive(&instance.process) || instance.keeper.as_ref().is_some_and(proc::is_alive)
        {
            return Ok(Observed::Running);
        }
        // Shim and instance both gone without a record: killed together (e.g. `kill -9` of
        // both). Re-check the file, which the shim may have written in between.
        Ok(Observed::Exited(
            self.exit_of(instance).unwrap_or(Exit::vanished()),
        ))
    }

    async fn wait(&self, instance: &Instance) -> Result<Exit, DriverError> {
        if let Some(exit) = self.exit_of(instance) {
            return Ok(exit);
        }
        match pidfd(&instance.process) {
            // The kernel wakes us when the process ends: no polling, whoever its parent is.
            // `with_interest` is deprecated for descriptors the caller might close while
            // registered; this one is owned by the `AsyncFd` and closed only with it, and its
            // replacement is `unsafe`, which this workspace forbids.
            #[allow(deprecated)]
            Some(fd) => {
                match tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE) {
                    Ok(fd) => {
                        let _ = fd.readable().await;
                    }
                    Err(_) => poll_until_gone(&instance.process).await,
                }
            }
            None => poll_until_gone(&instance.process).await,
        }
        Ok(self.recorded_exit(instance, Exit::vanished()).await)
    }

    async fn list(&self) -> Result<Vec<Found>, DriverError> {
        let mut found = Vec::new();
        let starting = self
            .starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (dir, mut instance, removed) in self.records() {
            if removed || starting.contains(&instance.id) {
                continue;
            }
            if instance.process.pid == 0 {
                // The control plane died while starting it: the shim may have started the
                // instance (its identity is in child.json) or not yet.
                match read_json::<ProcessIdentity>(&dir.join(shim::CHILD_FILE)) {
                    Some(child) if child.pid != 0 => {
                        instance.process = child;
                        let _ = write_json(&dir.join(INSTANCE_FILE), &instance);
                    }
                    _ => {
                        if let Some(keeper) = instance.keeper.filter(proc::is_alive) {
                            let _ = killpg(
                                Pid::from_raw(i32::try_from(keeper.pid).unwrap_or(i32::MAX)),
                                KernelSignal::SIGKILL,
                            );
                        }
                    }
                }
            }
            let verdict = if let Some(exit) = self.exit_of(&instance) {
                Verdict::Exited(exit)
            } else if proc::is_alive(&instance.process) {
                Verdict::Running
            } else if proc::identity(instance.process.pid).is_some() {
                Verdict::Recycled
            } else {
                Verdict::Exited(Exit::vanished())
            };
            found.push(Found { instance, verdict });
        }
        found.sort_by_key(|f| f.instance.started_at);
        Ok(found)
    }

    async fn remove(&self, instance: &Instance) -> Result<(), DriverError> {
        let marker = instance.run_dir.join(REMOVED_FILE);
        std::fs::write(&marker, b"")
            .map_err(|e| DriverError::io(format!("write {}", marker.display()), e))?;
        self.prune(&instance.service);
        Ok(())
    }

    async fn usage(&self, instance: &Instance) -> Option<Usage> {
        if !proc::is_alive(&instance.process) {
            return None;
        }
        proc::group_usage(instance.process.pid)
    }

    async fn logs(&self, service: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, DriverError> {
        let records = self
            .records()
            .into_iter()
            .filter(|(_, i, _)| i.service == service)
            .flat_map(|(dir, i, _)| logs::read_dir(&dir, &i.id, filter))
            .collect();
        Ok(logs::merge(records, filter))
    }
}
