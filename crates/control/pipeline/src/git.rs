//! Git, through the system `git` (full protocol and credential support, as users have it
//! configured): resolving a ref to a commit, a clean checkout of that exact commit, the files it
//! tracks, and the heads of a repository (local path or remote URL) for the watcher.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Why a git command failed.
#[derive(Debug, thiserror::Error)]
#[error("`git {args}` failed: {message}")]
pub struct GitError {
    /// The arguments.
    pub args: String,
    /// git's own message (or why it could not run).
    pub message: String,
}

/// A commit a run works on.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// Full sha.
    pub sha: String,
    /// Committer time (Unix seconds).
    pub time: i64,
    /// Subject line.
    pub subject: String,
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    let out = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| GitError {
            args: args.join(" "),
            message: format!("cannot run git ({e}); is it installed?"),
        })?;
    if !out.status.success() {
        return Err(GitError {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A repository: a local path or a remote URL.
#[derive(Clone, Debug)]
pub struct Repo {
    /// What git is given.
    pub location: String,
}

impl Repo {
    /// The repository at `location`, relative paths resolved against `base`.
    pub fn new(location: &str, base: &Path) -> Self {
        let local = !location.contains("://") && !location.contains('@');
        let location = if local && Path::new(location).is_relative() {
            base.join(location).display().to_string()
        } else {
            location.to_string()
        };
        Repo { location }
    }

    fn local(&self) -> Option<PathBuf> {
        let p = PathBuf::from(&self.location);
        p.exists().then_some(p)
    }

    /// The commit `reference` names (a branch, tag or sha).
    pub async fn resolve(&self, reference: &str) -> Result<Commit, GitError> {
        let dir = match self.local() {
            Some(d) => d,
            None => {
                // A remote: ask it for the ref, then fetch that commit into a scratch clone.
                return Err(GitError {
                    args: format!("rev-parse {reference}"),
                    message: format!(
                        "{} is not a local repository; runs of remote repositories start from the watcher, which fetches them",
                        self.location
                    ),
                });
            }
        };
        let out = git(
            Some(&dir),
            &[
                "log",
                "-1",
                "--format=%H%x00%ct%x00%s",
                &format!("{reference}^{{commit}}"),
                "--",
            ],
        )
        .await?;
        let mut parts = out.trim_end().splitn(3, '\0');
        let (Some(sha), Some(time), subject) = (parts.next(), parts.next(), parts.next()) else {
            return Err(GitError {
                args: format!("log {reference}"),
                message: format!("unexpected answer: {out}"),
            });
        };
        Ok(Commit {
            sha: sha.to_string(),
            time: time.parse().unwrap_or(0),
            subject: subject.unwrap_or("").to_string(),
        })
    }

    /// A clean checkout of `sha` in `dest` (which must not exist): a clone, so the run has the
    /// history and tags too, then the exact commit, detached.
    pub async fn checkout(&self, sha: &str, dest: &Path) -> Result<(), GitError> {
        let dest_text = dest.display().to_string();
        git(
            None,
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                &self.location,
                &dest_text,
            ],
        )
        .await?;
        git(Some(dest), &["checkout", "--quiet", "--detach", sha]).await?;
        Ok(())
    }

    /// Every branch and tag head: `(refs/heads/main, sha)`, `(refs/tags/v1.2.3, sha)`.
    pub async fn heads(&self) -> Result<Vec<(String, String)>, GitError> {
        let out = git(None, &["ls-remote", "--heads", "--tags", &self.location]).await?;
        let mut heads: Vec<(String, String)> = Vec::new();
        for line in out.lines() {
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            // An annotated tag is listed twice; its `^{}` line names the commit.
            match name.strip_suffix("^{}") {
                Some(tag) => {
                    heads.retain(|(n, _)| n != tag);
                    heads.push((tag.to_string(), sha.to_string()));
                }
                None => {
                    if !heads.iter().any(|(n, _)| n == name) {
                        heads.push((name.to_string(), sha.to_string()));
                    }
                }
            }
        }
        Ok(heads)
    }
}

/// The files a checkout tracks, relative to it.
pub async fn tracked_files(dir: &Path) -> Result<Vec<String>, GitError> {
    let out = git(Some(dir), &["ls-files", "-z"]).await?;
    Ok(out
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// The top of the git work tree containing `dir`, if any.
pub async fn top_level(dir: &Path) -> Option<PathBuf> {
    git(Some(dir), &["rev-parse", "--show-toplevel"])
        .await
        .ok()
        .map(|s| PathBuf::from(s.trim()))
}

/// Details of a commit in a checkout.
pub async fn commit_in(dir: &Path, sha: &str) -> Result<Commit, GitError> {
    Repo {
        location: dir.display().to_string(),
    }
    .resolve(sha)
    .await
}
