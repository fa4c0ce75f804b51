//! The runtime-driver compliance suite against the local-process driver (with this binary as
//! its shim), and the process driver's own promise: a recycled pid is never adopted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use slipway_runtime::driver::Verdict;
use slipway_runtime::{Driver, LocalDriver, ShimCommand};

use crate::support::{slipway_bin, start_ticks};

fn local(root: &Path) -> Arc<dyn Driver> {
    Arc::new(LocalDriver::new(
        root,
        ShimCommand::new(slipway_bin(), &["__shim"]),
    ))
}

slipway_runtime::driver_compliance_tests!(|root: &Path| local(root));

#[tokio::test]
async fn a_recycled_pid_is_never_adopted_nor_signalled() {
    let root = tempfile::tempdir().unwrap();
    let driver = local(&root.path().join("driver"));
    let spec = slipway_runtime::compliance::spec("web-0-aaaa", "exec sleep 300", root.path());
    let instance = driver.start(&spec).await.unwrap();
    driver
        .stop(&instance, Default::default(), Duration::from_secs(5))
        .await
        .unwrap();
    // The instance is gone; its pid now "belongs" to an unrelated process: rewrite the record
    // the way a pid recycled by the kernel would look (same pid number, another start time).
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let stranger_pid = stranger.id();
    let dir = root.path().join("driver").join("web-0-aaaa");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("instance.json")).unwrap()).unwrap();
    record["process"]["pid"] = stranger_pid.into();
    record["process"]["start_ticks"] = (start_ticks(stranger_pid).unwrap() + 1).into();
    record["keeper"] = serde_json::Value::Null;
    std::fs::write(dir.join("instance.json"), record.to_string()).unwrap();
    std::fs::remove_file(dir.join("exit.json")).unwrap();

    let fresh = local(&root.path().join("driver"));
    let found = fresh.list().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].verdict, Verdict::Recycled);
    assert!(
        fresh.usage(&found[0].instance).await.is_none(),
        "no figures for a stranger"
    );
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the stranger was not touched"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}
