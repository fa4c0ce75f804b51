//! The shim: a small process (`slipway __shim DIR`) between the control plane and one instance,
//! like containerd's shim or Podman's conmon.
//!
//! It starts the instance in its own process group, holds its stdout and stderr pipes, redacts
//! secret values from every line and writes the lines to rotated files, and records the
//! instance's pid, start time and exit status in its directory. Because the shim, not the
//! control plane, holds the pipes, an instance keeps running, and its output keeps being
//! captured, while the control plane is down; a restarted control plane re-adopts it from
//! those files.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::proc;
use super::write_json;
use crate::driver::{Exit, LogPolicy, ProcessIdentity};
use crate::logs::{Redactor, RotatingWriter, parse_line};

/// The shim's instructions, written by the driver (no secret values: those arrive in the
/// shim's environment, which it passes on to the instance).
pub const CONFIG_FILE: &str = "shim.json";
/// The instance's identity, written by the shim once the instance runs.
pub const CHILD_FILE: &str = "child.json";
/// How the instance ended, written by the shim after its output is drained.
pub const EXIT_FILE: &str = "exit.json";

/// See [`CONFIG_FILE`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimConfig {
    /// Shell command.
    pub command: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// Environment keys whose values are redacted.
    pub secret_keys: Vec<String>,
    /// Log rotation.
    pub logs: LogPolicy,
}

/// Runs the shim for the instance in `dir`; returns the process exit status.
pub fn main(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slipway shim: {}: {e}", dir.display());
            1
        }
    }
}

fn run(dir: &Path) -> std::io::Result<()> {
    let config: ShimConfig = serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE))?)
        .map_err(std::io::Error::other)?;
    let redactor = Redactor::new(
        config
            .secret_keys
            .iter()
            .filter_map(|k| std::env::var(k).ok()),
    );
    let mut writer = RotatingWriter::open(dir, config.logs)?;

    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(shell_command(&config.command))
        .current_dir(&config.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // Say why in the instance's own log, and end like a shell that cannot run it.
            let line = format!("slipway: cannot start `{}`: {e}", config.command);
            writer.write(&parse_line(
                Timestamp::now(),
                "stderr",
                &redactor.redact(&line),
            ))?;
            write_json(
                &dir.join(CHILD_FILE),
                &ProcessIdentity {
                    pid: 0,
                    start_ticks: 0,
                },
            )?;
            return write_json(
                &dir.join(EXIT_FILE),
                &Exit {
                    code: Some(127),
                    signal: None,
                    at: Timestamp::now(),
                },
            );
        }
    };
    let pid = child.id();
    write_json(
        &dir.join(CHILD_FILE),
        &ProcessIdentity {
            pid,
            start_ticks: proc::start_ticks(pid).unwrap_or(0),
        },
    )?;

    let (lines, received) = mpsc::channel::<(&'static str, String)>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| ("stdout", Box::new(s) as Box<dyn Read + Send>)),
        child
            .stderr
            .take()
            .map(|s| ("stderr", Box::new(s) as Box<dyn Read + Send>)),
    ]
    .into_iter()
    .flatten()
    .map(|(stream, pipe)| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if lines.send((stream, line)).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    })
    .collect();
    drop(lines);
    let (drained, done) = mpsc::channel::<()>();
    let log_writer = std::thread::spawn(move || {
        for (stream, line) in received {
            let record = parse_line(Timestamp::now(), stream, &redactor.redact(&line));
            if let Err(e) = writer.write(&record) {
                eprintln!("slipway shim: cannot write a log line: {e}");
            }
        }
        let _ = drained.send(());
    });

    let status = child.wait()?;
    // The instance is its main process: what it leaves behind in its group goes with it (as
    // with systemd's control-group kill mode), so nothing orphaned keeps running or holds the
    // output pipes open.
    if let Ok(group) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let exit = Exit {
        code: status.code(),
        signal: status.signal(),
        at: Timestamp::now(),
    };
    // Drain what the instance wrote before it ended; a grandchild that escaped the group and
    // still holds the pipe must not keep the exit from being recorded.
    let _ = done.recv_timeout(Duration::from_secs(2));
    write_json(&dir.join(EXIT_FILE), &exit)?;
    if log_writer.is_finished() {
        let _ = log_writer.join();
        for r in readers {
            let _ = r.join();
        }
    }
    Ok(())
}

/// Shell words that cannot follow `exec`.
const NOT_EXECUTABLE: &[&str] = &[
    "exit", "cd", "export", "set", "trap", "wait", ".", "source", "eval", "read", "shift",
    "return", "exec", "if", "while", "for", "case", "until", "{", "!", "ulimit", "umask",
];

/// A simple command runs as `exec COMMAND`, so the instance's main process is the program
/// itself (signals reach it, its exit status is the instance's) rather than a shell around
/// it. Anything with shell syntax is run as written.
pub fn shell_command(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    let syntax = command
        .chars()
        .any(|c| matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>' | '\n' | '`'));
    if syntax || first.contains('=') || NOT_EXECUTABLE.contains(&first) || first.is_empty() {
        command.to_string()
    } else {
        format!("exec {command}")
    }
}

#[cfg(test)]
mod tests {
    use super::shell_command;

    #[test]
    fn simple_commands_are_execed_and_shell_syntax_is_left_alone() {
        assert_eq!(
            shell_command("slipway-sample web"),
            "exec slipway-sample web"
        );
        assert_eq!(
            shell_command("./run --port $PORT"),
            "exec ./run --port $PORT"
        );
        assert_eq!(shell_command("exit 1"), "exit 1");
        assert_eq!(shell_command("FOO=1 app"), "FOO=1 app");
        assert_eq!(shell_command("a && b"), "a && b");
        assert_eq!(shell_command("echo a; exit 1"), "echo a; exit 1");
    }
}
