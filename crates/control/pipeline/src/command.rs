//! `run` steps: a shell command in the checkout, in its own process group, its output going to
//! the run's log line by line (and the last lines kept for the failure report), stopped — the
//! whole group — at its timeout or when the run is cancelled.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use indexmap::IndexMap;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::log::RunLog;

/// Lines of output kept for the report of a failed step.
const TAIL: usize = 20;

/// How a command ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// It exited with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// The run was cancelled and it was stopped.
    Cancelled,
    /// It could not start.
    NotStarted(String),
}

/// What a command did.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub ended: Ended,
    /// Its last lines of output.
    pub tail: Vec<String>,
}

/// A command to run.
#[derive(Clone, Debug)]
pub struct Spec<'a> {
    /// The shell and its flags (`sh -e`); `-c COMMAND` follows.
    pub shell: &'a str,
    /// The command.
    pub command: &'a str,
    /// Working directory.
    pub dir: &'a Path,
    /// Exactly these variables.
    pub env: &'a IndexMap<String, String>,
    /// Longest it may take.
    pub timeout: Option<Duration>,
}

/// Runs a command; its output goes to `log` as `who`.
pub async fn run(spec: Spec<'_>, cancel: &CancellationToken, log: &RunLog, who: &str) -> Outcome {
    let Spec {
        shell,
        command,
        dir,
        env,
        timeout,
    } = spec;
    let mut parts = shell.split_whitespace();
    let program = parts.next().unwrap_or("sh");
    let mut cmd = Command::new(program);
    cmd.args(parts)
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot run `{program}` in {}: {e}", dir.display());
            log.line(who, &why);
            return Outcome {
                ended: Ended::NotStarted(why),
                tail: Vec::new(),
            };
        }
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::<String>::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let (log, who, tail) = (log.clone(), who.to_string(), tail.clone());
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.line(&who, &line);
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_back(line);
                if t.len() > TAIL {
                    t.pop_front();
                }
            }
        }));
    }
    let far = Duration::from_secs(10 * 365 * 24 * 3600);
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status.ok().and_then(|s| s.code())),
        _ = tokio::time::sleep(timeout.unwrap_or(far)) => {
            stop_group(pgid, &mut child).await;
            Ended::TimedOut
        }
        _ = cancel.cancelled() => {
            stop_group(pgid, &mut child).await;
            Ended::Cancelled
        }
    };
    // The group may hold the pipes open after the main process ended (a background child):
    // give the readers a moment, then stop the group.
    for r in readers {
        let stuck = tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .is_err();
        if stuck && let Some(pgid) = pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    let tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    Outcome { ended, tail }
}

/// SIGTERM to the whole group, SIGKILL after 5s.
async fn stop_group(pgid: Option<i32>, child: &mut tokio::process::Child) {
    if let Some(pgid) = pgid {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> IndexMap<String, String> {
        let mut e = IndexMap::new();
        e.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        e.insert("GREETING".into(), "hi".into());
        e
    }

    #[tokio::test]
    async fn output_is_logged_and_the_exit_status_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::new(&dir.path().join("run.log"));
        let env = env();
        let out = run(
            Spec {
                shell: "sh -e",
                command: "echo $GREETING; echo oops >&2; exit 3",
                dir: dir.path(),
                env: &env,
                timeout: None,
            },
            &CancellationToken::new(),
            &log,
            "test/unit",
        )
        .await;
        assert_eq!(out.ended, Ended::Exited(Some(3)));
        assert!(out.tail.contains(&"hi".to_string()));
        assert!(out.tail.contains(&"oops".to_string()));
        let text = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
        assert!(text.contains("[test/unit] hi"), "{text}");
    }

    #[tokio::test]
    async fn a_timeout_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::new(&dir.path().join("run.log"));
        let started = std::time::Instant::now();
        let env = env();
        let out = run(
            Spec {
                shell: "sh -e",
                command: "sleep 30 & sleep 30",
                dir: dir.path(),
                env: &env,
                timeout: Some(Duration::from_millis(300)),
            },
            &CancellationToken::new(),
            &log,
            "build/x",
        )
        .await;
        assert_eq!(out.ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
