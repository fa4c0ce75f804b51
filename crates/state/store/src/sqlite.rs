//! The embedded [`Store`]: one SQLite file in the state directory, in WAL mode.
//!
//! Durability: every write is one transaction with `synchronous = FULL`, so a write that
//! returned survives a crash of the process or the machine; WAL keeps readers (the CLI's
//! `plan`, the API) from blocking the writer. The schema is migrated on open from the files in
//! `migrations/sqlite`, embedded at build time.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::broadcast;

use crate::{
    AppliedConfig, AuditEntry, Event, EventLevel, EventQuery, NewAudit, NewEvent, Store,
    StoreError, millis_to_time,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Subscribers further behind than this many events see a lag error.
const EVENT_CHANNEL: usize = 1024;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<Event>,
}

fn query_error(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

fn parse_json(text: &str, what: &'static str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what, source })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StoreError::Open {
                location: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: path.display().to_string(),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        Ok(SqliteStore { pool, events })
    }

    /// Runs SQLite's own consistency check; `ok` when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("checking integrity"))
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.get("id"),
        time: millis_to_time(row.get("time_ms")),
        level: EventLevel::parse(row.get::<&str, _>("level")),
        kind: row.get("kind"),
        environment: row.get("environment"),
        subject: row.get("subject"),
        message: row.get("message"),
        data: parse_json(row.get("data"), "event data")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("reading the schema version"))
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError> {
        let time_ms = now_ms();
        let data = json_text(&event.data);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (time_ms, level, kind, environment, subject, message, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(time_ms)
        .bind(event.level.as_str())
        .bind(&event.kind)
        .bind(&event.environment)
        .bind(&event.subject)
        .bind(&event.message)
        .bind(&data)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("appending an event"))?;
        let stored = Event {
            id,
            time: millis_to_time(time_ms),
            level: event.level,
            kind: event.kind,
            environment: event.environment,
            subject: event.subject,
            message: event.message,
            data: event.data,
        };
        // Nobody listening is fine.
        let _ = self.events.send(stored.clone());
        Ok(stored)
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let limit = query.limit.map_or(-1, i64::from);
        let sql = if query.newest {
            "SELECT * FROM (SELECT * FROM events WHERE id > ? AND (? IS NULL OR environment = ?) \
             ORDER BY id DESC LIMIT ?) ORDER BY id"
        } else {
            "SELECT * FROM events WHERE id > ? AND (? IS NULL OR environment = ?) ORDER BY id LIMIT ?"
        };
        let rows = sqlx::query(sql)
            .bind(query.after.unwrap_or(0))
            .bind(&query.environment)
            .bind(&query.environment)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("reading events"))?;
        rows.iter().map(event_from_row).collect()
    }

    fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        let time_ms = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit (time_ms, actor, action, target, outcome, details) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(time_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.outcome)
        .bind(json_text(&entry.details))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("appending an audit record"))?;
        Ok(AuditEntry {
            id,
            time: millis_to_time(time_ms),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            details: entry.details,
        })
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM (SELECT * FROM audit ORDER BY id DESC LIMIT ?) ORDER BY id")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(query_error("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.get("id"),
                    time: millis_to_time(row.get("time_ms")),
                    actor: row.get("actor"),
                    action: row.get("action"),
                    target: row.get("target"),
                    outcome: row.get("outcome"),
                    details: parse_json(row.get("details"), "audit details")?,
                })
            })
            .collect()
    }

    async fn record_applied(
        &self,
        environment: &str,
        snapshot: &serde_json::Value,
    ) -> Result<AppliedConfig, StoreError> {
        let time_ms = now_ms();
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO applied_configs (environment, generation, time_ms, snapshot) \
             VALUES (?, 1, ?, ?) \
             ON CONFLICT (environment) DO UPDATE SET \
               generation = generation + 1, time_ms = excluded.time_ms, snapshot = excluded.snapshot \
             RETURNING generation",
        )
        .bind(environment)
        .bind(time_ms)
        .bind(json_text(snapshot))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("recording an applied configuration"))?;
        Ok(AppliedConfig {
            environment: environment.to_string(),
            generation,
            time: millis_to_time(time_ms),
            snapshot: snapshot.clone(),
        })
    }

    async fn applied(&self, environment: &str) -> Result<Option<AppliedConfig>, StoreError> {
        let row = sqlx::query("SELECT * FROM applied_configs WHERE environment = ?")
            .bind(environment)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading an applied configuration"))?;
        row.map(|row| {
            Ok(AppliedConfig {
                environment: row.get("environment"),
                generation: row.get("generation"),
                time: millis_to_time(row.get("time_ms")),
                snapshot: parse_json(row.get("snapshot"), "applied configuration")?,
            })
        })
        .transpose()
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading metadata"))
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(query_error("writing metadata"))?;
        Ok(())
    }
}
