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

    /// The commit `reference` names (a branch, tag or sha). A remote repository is asked for
    /// its heads (`git ls-remote`): a branch or tag name, or a full sha, which the run's clone
    /// then checks out; its time and subject are read from that checkout (0 and empty here).
    pub async fn resolve(&self, reference: &str) -> Result<Commit, GitError> {
        let Some(dir) = self.local() else {
            return self.resolve_remote(reference).await;
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

    async fn resolve_remote(&self, reference: &str) -> Result<Commit, GitError> {
        let full_sha = reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        let sha = if full_sha {
            Some(reference.to_ascii_lowercase())
        } else {
            let heads = self.heads().await?;
            let wanted = [
                reference.to_string(),
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}"),
            ];
            wanted
                .iter()
                .find_map(|w| heads.iter().find(|(name, _)| name == w))
                .map(|(_, sha)| sha.clone())
        };
        let Some(sha) = sha else {
            return Err(GitError {
                args: format!("ls-remote {}", self.location),
                message: format!(
                    "{} has no branch or tag `{reference}` (a commit of a remote repository is named by its full sha)",
                    self.location
                ),
            });
        };
        Ok(Commit {
            sha,
            time: 0,
            subject: String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn a_remote_repository_resolves_branches_tags_and_full_shas_and_checks_them_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");
        run(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("a.txt"), "one\n").expect("write");
        run(&work, &["add", "a.txt"]);
        run(&work, &["commit", "-q", "-m", "first"]);
        let first = run(&work, &["rev-parse", "HEAD"]);
        run(&work, &["tag", "-a", "v1.0.0", "-m", "release"]);
        std::fs::write(work.join("a.txt"), "two\n").expect("write");
        run(&work, &["commit", "-q", "-am", "second"]);
        let second = run(&work, &["rev-parse", "HEAD"]);
        let bare = tmp.path().join("remote.git");
        run(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &work.display().to_string(),
                "remote.git",
            ],
        );

        let remote = Repo::new(&format!("file://{}", bare.display()), tmp.path());
        assert!(remote.local().is_none(), "a URL is a remote");
        assert_eq!(remote.resolve("main").await.expect("branch").sha, second);
        assert_eq!(
            remote.resolve("v1.0.0").await.expect("annotated tag").sha,
            first
        );
        assert_eq!(remote.resolve(&first).await.expect("full sha").sha, first);
        let err = remote.resolve("nope").await.expect_err("unknown ref");
        assert!(err.message.contains("no branch or tag `nope`"), "{err}");

        let dest = tmp.path().join("checkout");
        remote.checkout(&first, &dest).await.expect("checkout");
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).expect("read"),
            "one\n"
        );
        let c = commit_in(&dest, &first).await.expect("commit");
        assert_eq!(c.subject, "first");
        assert!(c.time > 0);

        let local = Repo::new("work", tmp.path());
        assert_eq!(local.resolve("main~1").await.expect("local").sha, first);
    }
}
