//! Processes of a state directory that nothing can find any more: shims (and the instances
//! they hold) whose instance directory is gone, because the state directory was deleted while
//! they ran. A new control plane must not start a second set beside them; `slipway down`
//! stops them. They are found by their command line, `slipway __shim <instances>/<id>`, and
//! their instance is the shim's child, leader of its own process group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A shim whose instance directory no longer exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stray {
    /// The shim's pid.
    pub shim: u32,
    /// The instance directory it was started with (gone).
    pub dir: PathBuf,
    /// Its children: the instance it holds (a process-group leader).
    pub children: Vec<u32>,
}

/// Every live shim started for an instance directory under `instances` that is gone.
pub fn find(instances: &Path) -> Vec<Stray> {
    let instances = std::path::absolute(instances).unwrap_or_else(|_| instances.to_path_buf());
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let procs: Vec<procfs::process::Process> = all.flatten().collect();
    let mut out = Vec::new();
    for p in &procs {
        let Ok(cmdline) = p.cmdline() else { continue };
        let Some(at) = cmdline.iter().position(|a| a == "__shim") else {
            continue;
        };
        let Some(dir) = cmdline.get(at + 1).map(PathBuf::from) else {
            continue;
        };
        if !dir.starts_with(&instances) || dir.exists() {
            continue;
        }
        if p.stat().is_ok_and(|s| s.state == 'Z') {
            continue;
        }
        let Ok(shim) = u32::try_from(p.pid) else {
            continue;
        };
        let children = procs
            .iter()
            .filter(|c| c.stat().is_ok_and(|s| s.ppid == p.pid && s.state != 'Z'))
            .filter_map(|c| u32::try_from(c.pid).ok())
            .collect();
        out.push(Stray {
            shim,
            dir,
            children,
        });
    }
    out
}

impl Stray {
    /// Stops it: its instance's process group gets SIGTERM, then SIGKILL after `grace`; then
    /// the shim. Returns once they are gone (or the grace is spent twice).
    pub fn stop(&self, grace: Duration) {
        let pid = |n: u32| Pid::from_raw(i32::try_from(n).unwrap_or(i32::MAX));
        for c in &self.children {
            let _ = killpg(pid(*c), Signal::SIGTERM);
            let _ = kill(pid(*c), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && self.children.iter().any(|c| super::proc::group_exists(*c))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in &self.children {
            let _ = killpg(pid(*c), Signal::SIGKILL);
        }
        let _ = kill(pid(self.shim), Signal::SIGKILL);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && super::proc::identity(self.shim).is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
