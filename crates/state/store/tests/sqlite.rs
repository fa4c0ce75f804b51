//! The SQLite store: the shared contract, plus what only a file-backed store can show
//! (persistence across reopening, idempotent migrations, append-only tables).

use slipway_store::{EventQuery, NewEvent, SqliteStore, Store};

async fn store() -> (Box<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    (Box::new(store), dir)
}

slipway_store::store_contract_tests!(store);

#[tokio::test]
async fn state_survives_reopening_and_migrations_apply_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let version = store.schema_version().await.unwrap();
    store
        .append_event(NewEvent::info("kept", "kept"))
        .await
        .unwrap();
    store
        .record_applied("staging", &serde_json::json!({"v": 1}))
        .await
        .unwrap();
    store.close().await;
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), version);
    assert_eq!(again.events(&EventQuery::default()).await.unwrap().len(), 1);
    assert_eq!(
        again.applied("staging").await.unwrap().unwrap().generation,
        1
    );
    assert_eq!(again.integrity_check().await.unwrap(), "ok");
}

/// A plain connection to the database file, past the store, as a user with `sqlite3` would have.
async fn raw(path: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn logs_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append_event(NewEvent::info("kept", "kept"))
        .await
        .unwrap();
    store
        .append_audit(slipway_store::NewAudit {
            actor: "admin".into(),
            action: "POST /x".into(),
            target: "/x".into(),
            outcome: "200".into(),
            details: serde_json::json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .append_audit(slipway_store::NewAudit {
            actor: "admin".into(),
            action: "deploy.start".into(),
            target: "deployment 1".into(),
            subject: Some("deployment-1".into()),
            outcome: "started".into(),
            details: serde_json::json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .complete_audit("deployment-1", "succeeded")
        .await
        .unwrap();
    store.close().await;
    let pool = raw(&path).await;
    for sql in [
        "UPDATE events SET message = 'x'",
        "DELETE FROM events",
        "UPDATE audit SET actor = 'x'",
        "DELETE FROM audit",
        "DELETE FROM audit_outcomes",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let err = sqlx::query("UPDATE audit_outcomes SET outcome = 'failed'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("written once"), "{err}");
}

#[tokio::test]
async fn the_database_is_in_wal_mode() {
    let (_store, dir) = store().await;
    let pool = raw(&dir.path().join("state.db")).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_release_cannot_be_rewritten_or_deleted_only_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .create_release(slipway_store::NewRelease {
            environment: "staging".into(),
            version: "abc".into(),
            description: "first".into(),
            snapshot: serde_json::json!({ "env": { "A": "1" } }),
        })
        .await
        .unwrap();
    store.close().await;
    let pool = raw(&path).await;
    for sql in [
        "UPDATE releases SET snapshot = '{}'",
        "UPDATE releases SET version = 'x'",
        "DELETE FROM releases",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(
            err.to_string().contains("immutable") || err.to_string().contains("never deleted"),
            "{sql}: {err}"
        );
    }
    sqlx::query("UPDATE releases SET pinned = 1")
        .execute(&pool)
        .await
        .unwrap();
}
