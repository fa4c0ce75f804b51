//! The state directory (`.slipway/` beside `slipway.toml` unless `--state-dir` says otherwise):
//! the one place a project's control plane keeps its files, and how clients find it.
//!
//! | file | what |
//! |---|---|
//! | `state.db` | the SQLite state store |
//! | `admin.token` | the admin API token, mode 0600, created on first start |
//! | `daemon.json` | the running daemon's pid and API address, removed on a clean stop |
//! | `daemon.lock` | held (flock) by the running daemon: one daemon per state directory |
//! | `daemon.log` | the daemon's log when started with `up --detach` |
//!
//! The files can be deleted under a running daemon (a `rm -rf .slipway`), so the daemon also
//! holds an identity that lives outside them: an abstract Unix socket named after the state
//! directory's absolute path ([`StateDir::claim_owner`]). A client finds the daemon that owns
//! a state directory through it, files or not ([`StateDir::owner`]), and its pid from the
//! socket's peer credentials.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// What `daemon.json` says about the running daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Process id.
    pub pid: u32,
    /// API address (`127.0.0.1:PORT`).
    pub listen: String,
    /// When it started.
    pub started_at: jiff::Timestamp,
    /// Slipway's version.
    pub version: String,
    /// The project file it serves.
    pub file: PathBuf,
}

/// Why a state-directory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// A file could not be read or written.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `daemon.json` is not valid.
    #[error("{} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The token file is readable by others.
    #[error("{} is readable by other users (mode {mode:o})", path.display())]
    TokenExposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The default for a project file: `.slipway/` beside it.
    pub fn beside(file: &Path) -> Self {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        StateDir::new(dir.join(".slipway"))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<(), StateDirError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.root))
    }

    /// The SQLite state store.
    pub fn database(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// The admin token file.
    pub fn token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// The running daemon's description.
    pub fn daemon_file(&self) -> PathBuf {
        self.root.join("daemon.json")
    }

    /// The lock the running daemon holds.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The detached daemon's log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The name of the abstract socket the owner of this state directory holds: a digest of
    /// its absolute path, so a deleted and recreated directory has the same one.
    fn owner_address(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        use sha2::Digest as _;
        use std::os::linux::net::SocketAddrExt as _;
        let absolute = std::path::absolute(&self.root)?;
        let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        let name = format!("slipway/{}", hex::encode(&digest[..16]));
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
    }

    /// Claims this state directory for the calling process: `Ok(Err(pid))` when another
    /// process owns it. The claim lasts as long as the listener; connections to it are how
    /// [`owner`](Self::owner) finds the owner, so the owner must accept them (and may drop
    /// them at once).
    pub fn claim_owner(&self) -> std::io::Result<Result<std::os::unix::net::UnixListener, u32>> {
        let address = self.owner_address()?;
        match std::os::unix::net::UnixListener::bind_addr(&address) {
            Ok(l) => Ok(Ok(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                Ok(Err(self.owner().unwrap_or(0)))
            }
            Err(e) => Err(e),
        }
    }

    /// The pid of the process that owns this state directory, if one does (whether or not
    /// the directory still exists).
    pub fn owner(&self) -> Option<u32> {
        let address = self.owner_address().ok()?;
        let stream = std::os::unix::net::UnixStream::connect_addr(&address).ok()?;
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()?;
        u32::try_from(cred.pid()).ok()
    }

    /// Reads `daemon.json`; `None` when no daemon has announced itself.
    pub fn daemon_info(&self) -> Result<Option<DaemonInfo>, StateDirError> {
        let path = self.daemon_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateDirError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes `daemon.json` atomically (a reader never sees half a file).
    pub fn write_daemon_info(&self, info: &DaemonInfo) -> Result<(), StateDirError> {
        let path = self.daemon_file();
        let bytes = serde_json::to_vec_pretty(info).expect("daemon info serializes");
        write_atomically(&path, &bytes, 0o600)
    }

    /// Removes `daemon.json`.
    pub fn remove_daemon_info(&self) {
        let _ = std::fs::remove_file(self.daemon_file());
    }

    /// Reads the admin token, refusing a file others can read.
    pub fn read_token(&self) -> Result<Option<String>, StateDirError> {
        let path = self.token_file();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StateDirError::TokenExposed { path, mode });
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        Ok(Some(text.trim().to_string()))
    }

    /// Creates the admin token file (mode 0600) with `token`, unless one exists; returns the
    /// token in the file.
    pub fn ensure_token(&self, token: &str) -> Result<String, StateDirError> {
        if let Some(existing) = self.read_token()? {
            return Ok(existing);
        }
        let path = self.token_file();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())
                    .map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                Ok(token.to_string())
            }
            // Another process won the race: use its token.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(self.read_token()?.unwrap_or_default())
            }
            Err(e) => Err(io(&path)(e)),
        }
    }
}

/// Writes a file through a temporary file and a rename, so it is whole or absent.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateDirError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join(".slipway"));
        state.create().unwrap();
        assert_eq!(state.ensure_token("first").unwrap(), "first");
        assert_eq!(state.ensure_token("second").unwrap(), "first");
        let mode = std::fs::metadata(state.token_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(state.token_file(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            state.read_token(),
            Err(StateDirError::TokenExposed { .. })
        ));
    }

    #[test]
    fn one_owner_per_state_directory_found_without_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join(".slipway"));
        assert_eq!(state.owner(), None);
        let listener = state.claim_owner().unwrap().expect("nobody owns it yet");
        listener.set_nonblocking(true).unwrap();
        assert_eq!(state.owner(), Some(std::process::id()));
        // A second claim names the owner.
        assert_eq!(state.claim_owner().unwrap().err(), Some(std::process::id()));
        // Another directory is another identity.
        let other = StateDir::new(dir.path().join("other"));
        assert_eq!(other.owner(), None);
        drop(listener);
        assert_eq!(state.owner(), None, "the claim ends with its listener");
    }

    #[test]
    fn daemon_info_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(state.daemon_info().unwrap().is_none());
        let info = DaemonInfo {
            pid: 42,
            listen: "127.0.0.1:7070".into(),
            started_at: jiff::Timestamp::UNIX_EPOCH,
            version: "0.1.0".into(),
            file: "slipway.toml".into(),
        };
        state.write_daemon_info(&info).unwrap();
        assert_eq!(state.daemon_info().unwrap(), Some(info));
    }
}
