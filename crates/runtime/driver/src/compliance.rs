//! The driver compliance suite: what every runtime driver must do, as tests any driver's crate
//! runs with [`driver_compliance_tests!`](crate::driver_compliance_tests).
//!
//! ```ignore
//! slipway_runtime::driver_compliance_tests!(|root: &std::path::Path| {
//!     std::sync::Arc::new(LocalDriver::new(root, ShimCommand::new(SLIPWAY, &["__shim"])))
//!         as std::sync::Arc<dyn slipway_runtime::Driver>
//! });
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use slipway_spec::model::Signal;

use crate::driver::{Driver, InstanceSpec, LogPolicy, Observed, Verdict};
use crate::logs::{LogFilter, REDACTED};

/// Builds a driver keeping its state under a directory.
pub type MakeDriver = dyn Fn(&Path) -> Arc<dyn Driver>;

/// A spec running `command` in `cwd`.
pub fn spec(id: &str, command: &str, cwd: &Path) -> InstanceSpec {
    let mut env = IndexMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/bin:/usr/bin:/bin".to_string(),
    );
    env.insert("SLIPWAY_INSTANCE".to_string(), id.to_string());
    InstanceSpec {
        id: id.to_string(),
        service: "svc".to_string(),
        environment: "test".to_string(),
        release: "r1".to_string(),
        slot: 0,
        command: command.to_string(),
        cwd: cwd.to_path_buf(),
        env,
        secret_keys: Vec::new(),
        port: None,
        heartbeat: None,
        logs: LogPolicy::default(),
        fingerprint: "f1".to_string(),
        image: None,
        resources: None,
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start, observe running, stop gracefully, observe the end; nothing of it is left.
pub async fn start_observe_stop(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let instance = driver
        .start(&spec("a-0", "exec sleep 300", root.path()))
        .await
        .expect("starts");
    assert!(instance.process.pid > 0);
    assert_eq!(
        driver.observe(&instance).await.expect("observe"),
        Observed::Running
    );
    assert!(
        driver.usage(&instance).await.is_some(),
        "a running instance has usage figures"
    );
    let exit = driver
        .stop(&instance, Signal::Term, Duration::from_secs(10))
        .await
        .expect("stops");
    assert_eq!(exit.signal, Some(15), "ended by SIGTERM: {exit:?}");
    assert!(matches!(
        driver.observe(&instance).await.expect("observe"),
        Observed::Exited(_)
    ));
    assert!(
        driver.usage(&instance).await.is_none(),
        "nothing of it is left"
    );
}

/// The exit status of an instance that ends by itself is reported.
pub async fn exit_status_is_reported(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let instance = driver
        .start(&spec("b-0", "exit 3", root.path()))
        .await
        .expect("starts");
    let exit = wait_for("the exit", async || match driver.observe(&instance).await {
        Ok(Observed::Exited(e)) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(3));
    assert!(!exit.success());
}

/// `wait` resolves when the instance ends, with its status, and at once once it has ended.
pub async fn wait_resolves_when_it_ends(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let instance = driver
        .start(&spec("w-0", "sleep 0.3; exit 4", root.path()))
        .await
        .expect("starts");
    let exit = tokio::time::timeout(Duration::from_secs(20), driver.wait(&instance))
        .await
        .expect("ends in time")
        .expect("wait");
    assert_eq!(exit.code, Some(4));
    assert_eq!(
        driver.observe(&instance).await.expect("observe"),
        Observed::Exited(exit)
    );
    let again = tokio::time::timeout(Duration::from_secs(1), driver.wait(&instance))
        .await
        .expect("at once")
        .expect("wait");
    assert_eq!(again, exit);
}

/// The instance sees exactly the environment it was given, in its working directory.
pub async fn environment_and_cwd_are_applied(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let mut s = spec(
        "c-0",
        "echo \"$GREETING $SLIPWAY_INSTANCE $(pwd)\"",
        root.path(),
    );
    s.env.insert("GREETING".into(), "hello".into());
    let instance = driver.start(&s).await.expect("starts");
    let line = wait_for("the output", async || {
        let logs = driver.logs("svc", &LogFilter::default()).await.ok()?;
        logs.into_iter().next()
    })
    .await;
    let cwd = std::fs::canonicalize(root.path()).expect("canonical");
    assert_eq!(
        line.message,
        format!("hello c-0 {}", cwd.display()),
        "env and cwd"
    );
    assert_eq!(line.instance, instance.id);
}

/// A process that ignores the stop signal is killed, with its whole group, after the grace.
pub async fn stop_kills_after_the_grace_period(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let instance = driver
        .start(&spec(
            "d-0",
            "trap '' TERM; sleep 300 & sleep 300; wait",
            root.path(),
        ))
        .await
        .expect("starts");
    wait_for("two processes", async || {
        driver.usage(&instance).await.filter(|u| u.processes >= 2)
    })
    .await;
    let started = std::time::Instant::now();
    let exit = driver
        .stop(&instance, Signal::Term, Duration::from_millis(500))
        .await
        .expect("stops");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited the grace"
    );
    assert_eq!(exit.signal, Some(9), "killed: {exit:?}");
    assert!(driver.usage(&instance).await.is_none(), "the group is gone");
}

/// Output lines are captured in order, JSON lines parsed, secret values redacted.
pub async fn logs_are_parsed_and_redacted(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let driver = make(&root.path().join("driver"));
    let mut s = spec(
        "e-0",
        r#"echo "plain $API_TOKEN"; echo '{"level":"ERROR","msg":"boom","code":7}' >&2; echo last"#,
        root.path(),
    );
    s.env.insert("API_TOKEN".into(), "tok-5ecret-value".into());
    s.secret_keys.push("API_TOKEN".into());
    driver.start(&s).await.expect("starts");
    let logs = wait_for("three lines", async || {
        let logs = driver.logs("svc", &LogFilter::default()).await.ok()?;
        (logs.len() >= 3).then_some(logs)
    })
    .await;
    let all = serde_json::to_string(&logs).expect("json");
    assert!(!all.contains("tok-5ecret-value"), "secret leaked: {all}");
    let plain = logs
        .iter()
        .find(|r| r.message.starts_with("plain"))
        .expect("plain line");
    assert_eq!(plain.message, format!("plain {REDACTED}"));
    let error = logs
        .iter()
        .find(|r| r.message == "boom")
        .expect("json line");
    assert_eq!(error.level.as_deref(), Some("error"));
    assert_eq!(error.stream, "stderr");
    assert_eq!(error.fields["code"], 7);
    let errors = driver
        .logs(
            "svc",
            &LogFilter {
                level: Some("error".into()),
                ..LogFilter::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(errors.len(), 1, "level filter: {errors:?}");
    for file in files_under(root.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("tok-5ecret-value"),
            "secret stored in {}",
            file.display()
        );
    }
}

/// Every file under `dir`, recursively (to check that a secret was stored nowhere).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A second driver on the same state finds a running instance (re-adoption) and can stop it;
/// removed instances are no longer listed.
pub async fn a_new_driver_finds_running_instances(make: &MakeDriver) {
    let root = tempfile::tempdir().expect("tempdir");
    let first = make(&root.path().join("driver"));
    let instance = first
        .start(&spec("f-0", "exec sleep 300", root.path()))
        .await
        .expect("starts");
    drop(first);
    let second = make(&root.path().join("driver"));
    let found = second.list().await.expect("list");
    let f = found
        .iter()
        .find(|f| f.instance.id == "f-0")
        .expect("listed");
    assert_eq!(f.verdict, Verdict::Running);
    assert_eq!(f.instance.process, instance.process);
    second
        .stop(&f.instance, Signal::Term, Duration::from_secs(5))
        .await
        .expect("stops");
    let found = second.list().await.expect("list");
    assert!(matches!(
        found
            .iter()
            .find(|f| f.instance.id == "f-0")
            .map(|f| f.verdict),
        Some(Verdict::Exited(_))
    ));
    second.remove(&instance).await.expect("remove");
    assert!(second.list().await.expect("list").is_empty());
}

/// Expands to one `#[tokio::test]` per compliance check, for the driver `$make` builds.
#[macro_export]
macro_rules! driver_compliance_tests {
    ($make:expr) => {
        mod driver_compliance {
            use super::*;
            fn make() -> Box<$crate::compliance::MakeDriver> {
                Box::new($make)
            }
            #[tokio::test]
            async fn start_observe_stop() {
                $crate::compliance::start_observe_stop(&*make()).await;
            }
            #[tokio::test]
            async fn exit_status_is_reported() {
                $crate::compliance::exit_status_is_reported(&*make()).await;
            }
            #[tokio::test]
            async fn wait_resolves_when_it_ends() {
                $crate::compliance::wait_resolves_when_it_ends(&*make()).await;
            }
            #[tokio::test]
            async fn environment_and_cwd_are_applied() {
                $crate::compliance::environment_and_cwd_are_applied(&*make()).await;
            }
            #[tokio::test]
            async fn stop_kills_after_the_grace_period() {
                $crate::compliance::stop_kills_after_the_grace_period(&*make()).await;
            }
            #[tokio::test]
            async fn logs_are_parsed_and_redacted() {
                $crate::compliance::logs_are_parsed_and_redacted(&*make()).await;
            }
            #[tokio::test]
            async fn a_new_driver_finds_running_instances() {
                $crate::compliance::a_new_driver_finds_running_instances(&*make()).await;
            }
        }
    };
}
