//! The data plane: `slipway proxy`, its own process, routing each service's traffic to the
//! pools of its releases by weight, stickiness and overrides ([`router`]), balancing within a
//! pool and ejecting failing backends ([`pool`]), draining removed pools, recording RED
//! metrics per release ([`metrics`]) and injecting faults on demand ([`fault`]). The control
//! plane drives it through the admin API ([`admin`]) with versioned route tables
//! ([`table`]); the proxy saves each table it accepts and serves the saved one after a
//! restart, so it keeps serving while the control plane is away.

pub mod admin;
pub mod fault;
pub mod metrics;
pub mod pool;
pub mod router;
pub mod server;
pub mod table;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub use server::Proxy;
pub use table::{Backend, Pool, Route, RouteTable, Track};

/// The admin token file in the proxy's directory (mode 0600).
pub const TOKEN_FILE: &str = "admin.token";
/// Where the proxy announces its admin address.
pub const INFO_FILE: &str = "proxy.json";

/// What the proxy announces in [`INFO_FILE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Process id.
    pub pid: u32,
    /// Admin API address.
    pub admin: String,
}

/// How to run the proxy.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Its directory: token, saved table, announcement.
    pub dir: PathBuf,
    /// Admin API address (`127.0.0.1:0` picks one).
    pub admin: SocketAddr,
    /// Share (0–1) of requests written to the access log on stdout.
    pub access_sample: f64,
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// File or socket trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The saved table cannot be served.
    #[error("the saved route table cannot be served: {0}")]
    Table(#[from] table::TableError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let context = context.into();
    move |source| ProxyError::Io { context, source }
}

/// Reads the admin token from `dir`, creating one (mode 0600) if there is none.
pub fn ensure_token(dir: &Path) -> Result<String, ProxyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ProxyError::Io {
        context: "random token".into(),
        source: std::io::Error::other(e),
    })?;
    let token = format!("slwp_{}", hex::encode(bytes));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write the token"))?;
    std::fs::rename(&tmp, &path).map_err(io("install the token"))?;
    Ok(token)
}

/// Runs the proxy until SIGTERM or SIGINT.
pub async fn run(options: ProxyOptions) -> Result<(), ProxyError> {
    let mut term = signal(SignalKind::terminate()).map_err(io("install signal handlers"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("install signal handlers"))?;
    std::fs::create_dir_all(&options.dir)
        .map_err(io(format!("create {}", options.dir.display())))?;
    let token = ensure_token(&options.dir)?;
    let proxy = Proxy::new(&options.dir, options.access_sample);
    proxy.restore().await?;
    let admin = tokio::net::TcpListener::bind(options.admin)
        .await
        .map_err(io(format!("listen on {}", options.admin)))?;
    let bound = admin.local_addr().map_err(io("admin address"))?;
    let info = ProxyInfo {
        pid: std::process::id(),
        admin: bound.to_string(),
    };
    let tmp = options.dir.join(format!("{INFO_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&info).expect("serializes"))
        .and_then(|()| std::fs::rename(&tmp, options.dir.join(INFO_FILE)))
        .map_err(io("announce the admin address"))?;
    tracing::info!(admin = %bound, "proxy ready");
    let stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(proxy.clone(), admin, token, stop.clone()));
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    stop.cancel();
    let _ = admin_task.await;
    Ok(())
}
