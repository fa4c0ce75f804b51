//! What `/proc` says about a process: its identity (pid + start time), whether it still runs,
//! and the CPU and memory of its process group.

use crate::driver::{ProcessIdentity, Usage};

/// The identity of a running process, or `None` if there is none (or only a zombie).
pub fn identity(pid: u32) -> Option<ProcessIdentity> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    if stat.state == 'Z' || stat.state == 'X' {
        return None;
    }
    Some(ProcessIdentity {
        pid,
        start_ticks: stat.starttime,
    })
}

/// Whether `who` still runs as the same process (not a recycled pid).
pub fn is_alive(who: &ProcessIdentity) -> bool {
    identity(who.pid).is_some_and(|now| now.start_ticks == who.start_ticks)
}

/// Whether any process of group `pgid` still exists (zombies included: they are about to be
/// reaped, and counting them keeps "the group is gone" strict).
pub fn group_exists(pgid: u32) -> bool {
    // 0 would mean "our own group" to the kernel: never ask about it.
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        // EPERM: it exists but is not ours.
        Err(_) => true,
    }
}

/// CPU and memory of the group led by `pgid`: the leader and its descendants still in the
/// group. Walking the process tree from the leader (`/proc/PID/task/TID/children`) costs a few
/// reads per process instead of a scan of every process on the machine.
pub fn group_usage(pgid: u32) -> Option<Usage> {
    let group = i32::try_from(pgid).ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    let page = procfs::page_size();
    let mut usage = Usage::default();
    let mut queue = vec![group];
    let mut seen = 0;
    while let Some(pid) = queue.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        let Ok(process) = procfs::process::Process::new(pid) else {
            continue;
        };
        let Ok(stat) = process.stat() else {
            continue;
        };
        if stat.pgrp != group || stat.state == 'Z' {
            continue;
        }
        usage.cpu_ms += (stat.utime + stat.stime) * 1000 / ticks;
        usage.rss_bytes += stat.rss * page;
        usage.processes += 1;
        if let Ok(tasks) = process.tasks() {
            for task in tasks.flatten() {
                if let Ok(children) = task.children() {
                    queue.extend(children.into_iter().filter_map(|c| i32::try_from(c).ok()));
                }
            }
        }
    }
    (usage.processes > 0).then_some(usage)
}

/// The start time of `pid` even if it has already exited but is not yet reaped.
pub fn start_ticks(pid: u32) -> Option<u64> {
    procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}
