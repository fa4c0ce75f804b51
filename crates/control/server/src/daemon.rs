//! Start-up and shutdown of the control plane.
//!
//! Start-up order matters for crash safety and for clients: the state-directory lock first (one
//! daemon per project), then the store (migrated), the token (created once, mode 0600), the
//! listener, and only then `daemon.json`, so a client that finds the file finds a daemon that
//! answers. A daemon killed with `kill -9` leaves `daemon.json` behind; the next start replaces
//! it, and clients that find it stale say so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use slipway_api::ControlInfo;
use slipway_api::state_dir::{DaemonInfo, StateDir, StateDirError};
use slipway_spec::Report;
use slipway_store::{EventLevel, NewEvent, SqliteStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::environments::{self, ApplyError};
use crate::http::{self, AppState};
use crate::workloads::Workloads;

/// The API address used when neither the file nor the command line sets one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// How to run the daemon.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The project file.
    pub file: PathBuf,
    /// The state directory.
    pub state_dir: StateDir,
    /// API address, overriding `[control] listen`.
    pub listen: Option<SocketAddr>,
    /// Environment to bring up (default: the project's default).
    pub environment: Option<String>,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds this state directory.
    #[error("a control plane is already running for {}", state_dir.display())]
    AlreadyRunning {
        /// The state directory.
        state_dir: PathBuf,
        /// What it announced, if readable.
        info: Option<Box<DaemonInfo>>,
        /// Its pid, from the state directory's ownership socket.
        pid: Option<u32>,
    },
    /// The project file has errors.
    #[error("the project file is invalid")]
    Invalid(Report),
    /// The project could not be applied.
    #[error("cannot apply the project")]
    Apply(#[source] ApplyError),
    /// A state-directory file failed.
    #[error("state directory error")]
    StateDir(#[source] StateDirError),
    /// The store failed.
    #[error("state store error")]
    Store(#[source] StoreError),
    /// The API address is not usable.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `[control] listen` is not an address.
    #[error("`{0}` is not an address and port")]
    BadListen(String),
    /// The metrics store could not be opened.
    #[error("cannot open the metrics store in .slipway/metrics")]
    Metrics(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// Randomness for the token was unavailable.
    #[error("cannot generate the admin token")]
    Random(#[source] getrandom::Error),
}

/// A fresh admin token: `slw_` and 64 hex digits (256 random bits).
fn new_token() -> Result<String, DaemonError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(DaemonError::Random)?;
    Ok(format!("slw_{}", hex::encode(bytes)))
}

/// Runs the daemon until SIGTERM, SIGINT or `POST /v1/shutdown`.
pub async fn run(options: DaemonOptions) -> Result<(), DaemonError> {
    // Registered before anything else, so a signal during start-up is handled, not fatal.
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let project = match environments::load_project(&options.file) {
        Ok(p) => p,
        Err(ApplyError::Invalid(report)) => return Err(DaemonError::Invalid(report)),
        Err(e) => return Err(DaemonError::Apply(e)),
    };
    let state_dir = options.state_dir.clone();
    state_dir.create().map_err(DaemonError::StateDir)?;
    // Held until the process exits, however it exits.
    let lock_path = state_dir.lock_file();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| {
            DaemonError::StateDir(StateDirError::Io {
                path: lock_path.clone(),
                source,
            })
        })?;
    if lock.try_lock().is_err() {
        return Err(DaemonError::AlreadyRunning {
            state_dir: state_dir.root().to_path_buf(),
            info: state_dir.daemon_info().ok().flatten().map(Box::new),
            pid: state_dir.owner(),
        });
    }
    // The identity outside the files: a control plane whose state directory was deleted
    // still holds it, so a second one for the same project is refused, not doubled.
    let owner = match state_dir.claim_owner() {
        Ok(Ok(listener)) => listener,
        Ok(Err(pid)) => {
            return Err(DaemonError::AlreadyRunning {
                state_dir: state_dir.root().to_path_buf(),
                info: None,
                pid: Some(pid),
            });
        }
        Err(source) => {
            return Err(DaemonError::StateDir(StateDirError::Io {
                path: state_dir.root().to_path_buf(),
                source,
            }));
        }
    };
    hold_ownership(owner);
    let lock_identity = file_identity(&lock);

    let store = SqliteStore::open(&state_dir.database())
        .await
        .map_err(DaemonError::Store)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let token = state_dir
        .ensure_token(&new_token()?)
        .map_err(DaemonError::StateDir)?;

    // An address someone chose must be free; the default only should be: a second project
    // on the machine (following the examples one after the other, say) gets another port, and
    // its CLI finds it through `daemon.json` as always.
    let (listen, chosen) = match options.listen {
        Some(addr) => (addr, true),
        None => match project.config.control.listen.clone() {
            Some(text) => (
                text.parse().map_err(|_| DaemonError::BadListen(text))?,
                true,
            ),
            None => (
                DEFAULT_LISTEN
                    .parse()
                    .map_err(|_| DaemonError::BadListen(DEFAULT_LISTEN.into()))?,
                false,
            ),
        },
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) if !chosen && e.kind() == std::io::ErrorKind::AddrInUse => {
            let any = SocketAddr::new(listen.ip(), 0);
            let l = TcpListener::bind(any)
                .await
                .map_err(|source| DaemonError::Listen {
                    addr: any.to_string(),
                    source,
                })?;
            tracing::warn!(
                default = %listen,
                "the default API address is in use (another project's control plane?); listening on a free port instead (`[control] listen` fixes one)"
            );
            l
        }
        Err(source) => {
            return Err(DaemonError::Listen {
                addr: listen.to_string(),
                source,
            });
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: listen.to_string(),
            source,
        })?;

    let started_at = jiff::Timestamp::now();
    let pid = std::process::id();
    let shutdown = CancellationToken::new();
    let salt = match store
        .meta("secret_salt")
        .await
        .map_err(DaemonError::Store)?
    {
        Some(s) => s,
        None => {
            let salt = new_token()?;
            store
                .set_meta("secret_salt", &salt)
                .await
                .map_err(DaemonError::Store)?;
            salt
        }
    };
    let workloads = Arc::new(workloads_for(&project, &state_dir, store.clone(), salt));
    let engine = slipway_deploy::Engine::new(store.clone(), workloads.clone());
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("slipway"));
    let pipelines = slipway_pipeline::Pipelines::new(
        store.clone(),
        engine.clone(),
        workloads.clone(),
        slipway_pipeline::PipelineOptions {
            project_file: std::path::absolute(&options.file).unwrap_or(options.file.clone()),
            runs_dir: state_dir.root().join("runs"),
            bin_dir: exe.parent().map(std::path::Path::to_path_buf),
        },
    );
    let metrics_config = crate::metrics::config_for(&project, &project.default_environment());
    let metrics = crate::metrics::Metrics::start(
        &state_dir.root().join("metrics"),
        metrics_config,
        workloads.clone(),
        store.clone(),
        shutdown.clone(),
    )
    .map_err(DaemonError::Metrics)?;
    let alerts = crate::alerts::Alerts::start(
        &project,
        store.clone(),
        metrics.clone(),
        &format!("http://{bound}"),
        shutdown.clone(),
    )
    .await
    .map_err(DaemonError::Store)?;
    let app = Arc::new(AppState::new(
        store.clone(),
        options.file.clone(),
        &token,
        shutdown.clone(),
        ControlInfo {
            pid,
            version: crate::VERSION.to_string(),
            started_at,
            listen: bound.to_string(),
            store: store.backend().to_string(),
        },
        http::Drivers {
            workloads: workloads.clone(),
            engine: engine.clone(),
            pipelines: pipelines.clone(),
            metrics,
            alerts,
        },
    ));

    store
        .append_event(
            NewEvent::info(
                "daemon.started",
                format!("control plane started on {bound} (pid {pid})"),
            )
            .data(json!({ "pid": pid, "listen": bound.to_string(), "version": crate::VERSION })),
        )
        .await
        .map_err(DaemonError::Store)?;
    let applied = environments::apply(store.as_ref(), &project, options.environment.as_deref())
        .await
        .map_err(DaemonError::Apply)?;
    tracing::info!(environment = %applied.environment, generation = applied.generation, "configuration applied");
    workloads.start_dataplane().await;
    // What ran before this start comes back first (instances are adopted, interrupted
    // deployments resumed or rolled back); only then does the route sync run, so the proxy
    // keeps serving its last table meanwhile.
    // Every environment that ran something comes back, not only the one `up` was asked for:
    // a restart must not leave production without instances until someone touches it.
    crate::deploys::ensure_restored(&app, &applied.environment).await;
    match store.live_environments().await {
        Ok(live) => {
            for env in live.iter().filter(|e| **e != applied.environment) {
                crate::deploys::ensure_restored(&app, env).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list the environments to bring back"),
    }
    workloads.start_route_sync();
    let audit = |action: &str, target: String, subject: Option<String>, outcome: &str, reason| {
        slipway_store::NewAudit {
            actor: "system".into(),
            action: action.into(),
            environment: Some(applied.environment.clone()),
            target,
            reason,
            subject,
            outcome: outcome.into(),
            details: json!({ "generation": applied.generation, "changed": applied.changed }),
            ..Default::default()
        }
    };
    let mut entries = vec![audit(
        "config.apply",
        format!("generation {}", applied.generation),
        None,
        "succeeded",
        Some("slipway up started the control plane".to_string()),
    )];
    match crate::deploys::deploy_if_changed(&app, &project, &applied, "slipway up").await {
        Ok(Some(d)) => {
            tracing::info!(deployment = d.id, "deploying the project file");
            entries.push(audit(
                "deploy.start",
                format!("deployment {} (deploy of r{})", d.id, d.release),
                Some(format!("deployment-{}", d.id)),
                "started",
                Some("the project file changed since the last deploy".to_string()),
            ));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the project file was not deployed");
            entries.push(audit(
                "deploy.start",
                format!("environment {}", applied.environment),
                None,
                "refused",
                Some(e.to_string()),
            ));
        }
    }
    for entry in entries {
        let subject = entry.subject.clone();
        store
            .append_audit(entry)
            .await
            .map_err(DaemonError::Store)?;
        if let Some(subject) = subject {
            crate::http::settle_audit(store.as_ref(), &subject).await;
        }
    }
    if let Err(e) = pipelines.recover().await {
        tracing::warn!(error = %e, "cannot recover pipeline runs");
    }
    pipelines.start_watcher(shutdown.clone());
    crate::slos::spawn(app.clone(), shutdown.clone());

    state_dir
        .write_daemon_info(&DaemonInfo {
            pid,
            listen: bound.to_string(),
            started_at,
            version: crate::VERSION.to_string(),
            file: std::path::absolute(&options.file).unwrap_or(options.file.clone()),
        })
        .map_err(DaemonError::StateDir)?;
    tracing::info!(%bound, state_dir = %state_dir.root().display(), "control plane listening");

    watch_state_dir(&app, &state_dir, lock_identity, shutdown.clone());
    let signals = shutdown.clone();
    let signal_app = app.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; stopping (instances keep running)"),
            _ = int.recv() => {
                // Ctrl-C on a foreground `slipway up` stops everything, like `slipway down`.
                tracing::info!("SIGINT received; stopping the control plane and its instances");
                signal_app.stop_workloads.store(true, Ordering::SeqCst);
            }
            _ = signals.cancelled() => {}
        }
        signals.cancel();
    });

    let router = http::router(app.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;

    engine.shutdown();
    let stopping = app.stop_workloads.load(Ordering::SeqCst);
    app.metrics.shutdown(stopping).await;
    if stopping {
        tracing::info!("stopping every instance");
        workloads.stop_all().await;
    } else {
        workloads.detach_all().await;
    }
    let stopped = store
        .append_event(NewEvent::info(
            "daemon.stopped",
            format!("control plane stopped (pid {pid})"),
        ))
        .await;
    if let Err(e) = &stopped {
        tracing::warn!(error = %e, "cannot record the stop");
    }
    if let Err(e) = served {
        let _ = store
            .append_event(
                NewEvent::info("daemon.failed", format!("API server failed: {e}"))
                    .level(EventLevel::Error),
            )
            .await;
    }
    state_dir.remove_daemon_info();
    drop(lock);
    Ok(())
}

/// Answers connections to the ownership socket (a client asking who owns the state directory
/// learns it from the connection itself) for as long as the process lives.
fn hold_ownership(listener: std::os::unix::net::UnixListener) {
    std::thread::Builder::new()
        .name("state-dir-owner".into())
        .spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot answer ownership checks"));
}

/// Device and inode of an open file.
fn file_identity(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// How often the daemon checks that its state directory is still its own.
const STATE_DIR_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops the control plane, and everything it runs, when its state directory is deleted or
/// replaced under it (`rm -rf .slipway`): its records are gone, so nothing it runs could be
/// found again, and leaving them would orphan them.
fn watch_state_dir(
    app: &Arc<AppState>,
    state_dir: &StateDir,
    lock: Option<(u64, u64)>,
    shutdown: CancellationToken,
) {
    let app = app.clone();
    let path = state_dir.lock_file();
    let root = state_dir.root().to_path_buf();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(STATE_DIR_CHECK) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = std::fs::File::open(&path)
                .ok()
                .and_then(|f| file_identity(&f));
            if now.is_some() && now == lock {
                continue;
            }
            tracing::error!(
                state_dir = %root.display(),
                "the state directory was deleted or replaced while the control plane ran; stopping it and every instance it runs (their records are gone)"
            );
            app.stop_workloads.store(true, Ordering::SeqCst);
            shutdown.cancel();
            return;
        }
    });
}

/// The workloads of this project: the local-process driver with instance directories in the
/// state directory, its shim being this very binary (`slipway __shim`), and secret values
/// taken from the environment of `slipway up` for the names `[secrets]` declares.
fn workloads_for(
    project: &slipway_spec::Project,
    state_dir: &StateDir,
    store: Arc<dyn Store>,
    secret_salt: String,
) -> Workloads {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("slipway"));
    let driver = slipway_runtime::LocalDriver::new(
        state_dir.root().join("instances"),
        slipway_runtime::ShimCommand::new(&exe, &["__shim"]),
    );
    let driver: Arc<dyn slipway_runtime::Driver> = Arc::new(driver);
    let dataplane = match crate::dataplane::DataPlane::new(
        driver.clone(),
        store.clone(),
        &state_dir.root().join("proxy"),
        &exe,
    ) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare the proxy; services get no traffic");
            None
        }
    };
    let secrets = project
        .config
        .secrets
        .keys()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect();
    Workloads::new(
        driver,
        store,
        slipway_runtime::RuntimeOptions {
            bin_dir: exe.parent().map(std::path::Path::to_path_buf),
            releases_dir: state_dir.root().join("releases"),
            secrets,
            logs: slipway_runtime::driver::LogPolicy::default(),
        },
        dataplane,
        secret_salt,
    )
}
