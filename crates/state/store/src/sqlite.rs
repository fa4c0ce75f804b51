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
    ActionRecord, AlertEvent, AlertHistoryQuery, AppliedConfig, AuditEntry, AuditQuery,
    DeploymentRecord, DeploymentUpdate, EnvironmentState, Event, EventLevel, EventQuery,
    IncidentEntry, IncidentQuery, IncidentRecord, NewAction, NewAlertEvent, NewAudit,
    NewDeployment, NewEvent, NewIncidentEntry, NewNotification, NewRelease, NewRun, OutboxEntry,
    ReleaseRecord, RunQuery, RunRecord, RunUpdate, Store, StoreError, millis_to_time,
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

fn release_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ReleaseRecord, StoreError> {
    Ok(ReleaseRecord {
        environment: row.get("environment"),
        number: row.get("number"),
        version: row.get("version"),
        time: millis_to_time(row.get("time_ms")),
        description: row.get("description"),
        snapshot: parse_json(row.get("snapshot"), "release snapshot")?,
        pinned: row.get::<i64, _>("pinned") != 0,
        pruned: row.get::<i64, _>("pruned") != 0,
    })
}

fn deployment_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<DeploymentRecord, StoreError> {
    Ok(DeploymentRecord {
        id: row.get("id"),
        environment: row.get("environment"),
        kind: row.get("kind"),
        release: row.get("release"),
        from_release: row.get("from_release"),
        status: row.get("status"),
        active: row.get::<i64, _>("active") != 0,
        started: millis_to_time(row.get("started_ms")),
        updated: millis_to_time(row.get("updated_ms")),
        finished: row.get::<Option<i64>, _>("finished_ms").map(millis_to_time),
        reason: row.get("reason"),
        state: parse_json(row.get("state"), "deployment state")?,
    })
}

fn run_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.get("id"),
        environment: row.get("environment"),
        git_ref: row.get("git_ref"),
        commit: row.get("commit_sha"),
        commit_time: row
            .get::<Option<i64>, _>("commit_time_ms")
            .map(millis_to_time),
        trigger: row.get("trigger"),
        status: row.get("status"),
        created: millis_to_time(row.get("created_ms")),
        started: row.get::<Option<i64>, _>("started_ms").map(millis_to_time),
        finished: row.get::<Option<i64>, _>("finished_ms").map(millis_to_time),
        reason: row.get("reason"),
        failed_step: row.get("failed_step"),
        state: parse_json(row.get("state"), "run state")?,
    })
}

/// Whether a failed insert broke a uniqueness rule.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
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
             AND time_ms >= ? ORDER BY id DESC LIMIT ?) ORDER BY id"
        } else {
            "SELECT * FROM events WHERE id > ? AND (? IS NULL OR environment = ?) \
             AND time_ms >= ? ORDER BY id LIMIT ?"
        };
        let rows = sqlx::query(sql)
            .bind(query.after.unwrap_or(0))
            .bind(&query.environment)
            .bind(&query.environment)
            .bind(query.since_ms.unwrap_or(i64::MIN))
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
            "INSERT INTO audit (time_ms, actor, action, environment, target, reason, request_id, \
             subject, outcome, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(time_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.environment)
        .bind(&entry.target)
        .bind(&entry.reason)
        .bind(&entry.request_id)
        .bind(&entry.subject)
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
            environment: entry.environment,
            target: entry.target,
            reason: entry.reason,
            request_id: entry.request_id,
            subject: entry.subject,
            outcome: entry.outcome,
            completed: None,
            details: entry.details,
        })
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let action = query.action.as_deref().map(|a| match a.strip_suffix('*') {
            // A prefix: `deploy.*` is every action starting with `deploy.` (LIKE's own
            // wildcards in the name are escaped).
            Some(prefix) => (
                format!(
                    "{}%",
                    prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                ),
                true,
            ),
            None => (a.to_string(), false),
        });
        let rows = sqlx::query(
            "SELECT * FROM (SELECT a.*, o.outcome AS final_outcome, o.time_ms AS final_ms \
             FROM audit a LEFT JOIN audit_outcomes o ON o.audit_id = a.id \
             WHERE (?1 IS NULL OR a.environment = ?1) \
               AND (?2 IS NULL OR (?3 AND a.action LIKE ?2 ESCAPE '\\') OR (NOT ?3 AND a.action = ?2)) \
             ORDER BY a.id DESC LIMIT ?4) ORDER BY id",
        )
        .bind(&query.environment)
        .bind(action.as_ref().map(|(a, _)| a.clone()))
        .bind(action.as_ref().is_some_and(|(_, prefix)| *prefix))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                let final_outcome: Option<String> = row.get("final_outcome");
                let final_ms: Option<i64> = row.get("final_ms");
                Ok(AuditEntry {
                    id: row.get("id"),
                    time: millis_to_time(row.get("time_ms")),
                    actor: row.get("actor"),
                    action: row.get("action"),
                    environment: row.get("environment"),
                    target: row.get("target"),
                    reason: row.get("reason"),
                    request_id: row.get("request_id"),
                    subject: row.get("subject"),
                    outcome: final_outcome.unwrap_or_else(|| row.get("outcome")),
                    completed: final_ms.map(millis_to_time),
                    details: parse_json(row.get("details"), "audit details")?,
                })
            })
            .collect()
    }

    async fn complete_audit(&self, subject: &str, outcome: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO audit_outcomes (audit_id, time_ms, outcome) \
             SELECT a.id, ?, ? FROM audit a \
             WHERE a.subject = ? AND a.outcome = 'started' \
               AND NOT EXISTS (SELECT 1 FROM audit_outcomes o WHERE o.audit_id = a.id)",
        )
        .bind(now_ms())
        .bind(outcome)
        .bind(subject)
        .execute(&self.pool)
        .await
        .map_err(query_error("completing audit records"))?;
        Ok(done.rows_affected())
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

    async fn create_release(&self, release: NewRelease) -> Result<ReleaseRecord, StoreError> {
        let time_ms = now_ms();
        // One statement, so two concurrent creations cannot take the same number.
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO releases (environment, number, version, time_ms, description, snapshot) \
             VALUES (?, (SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE environment = ?), \
                     ?, ?, ?, ?) RETURNING number",
        )
        .bind(&release.environment)
        .bind(&release.environment)
        .bind(&release.version)
        .bind(time_ms)
        .bind(&release.description)
        .bind(json_text(&release.snapshot))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("recording a release"))?;
        Ok(ReleaseRecord {
            environment: release.environment,
            number,
            version: release.version,
            time: millis_to_time(time_ms),
            description: release.description,
            snapshot: release.snapshot,
            pinned: false,
            pruned: false,
        })
    }

    async fn release(
        &self,
        environment: &str,
        number: i64,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        sqlx::query("SELECT * FROM releases WHERE environment = ? AND number = ?")
            .bind(environment)
            .bind(number)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a release"))?
            .as_ref()
            .map(release_from_row)
            .transpose()
    }

    async fn releases(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseRecord>, StoreError> {
        sqlx::query("SELECT * FROM releases WHERE environment = ? ORDER BY number DESC LIMIT ?")
            .bind(environment)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("reading releases"))?
            .iter()
            .map(release_from_row)
            .collect()
    }

    async fn set_release_flags(
        &self,
        environment: &str,
        number: i64,
        pinned: Option<bool>,
        pruned: Option<bool>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE releases SET pinned = COALESCE(?, pinned), pruned = COALESCE(?, pruned) \
             WHERE environment = ? AND number = ?",
        )
        .bind(pinned.map(i64::from))
        .bind(pruned.map(i64::from))
        .bind(environment)
        .bind(number)
        .execute(&self.pool)
        .await
        .map_err(query_error("flagging a release"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "release",
                key: format!("{environment}/r{number}"),
            });
        }
        Ok(())
    }

    async fn create_deployment(
        &self,
        deployment: NewDeployment,
    ) -> Result<DeploymentRecord, StoreError> {
        let time_ms = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO deployments (environment, kind, release, from_release, status, active, \
                                      started_ms, updated_ms, state) \
             VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?) RETURNING *",
        )
        .bind(&deployment.environment)
        .bind(&deployment.kind)
        .bind(deployment.release)
        .bind(deployment.from_release)
        .bind(&deployment.status)
        .bind(time_ms)
        .bind(time_ms)
        .bind(json_text(&deployment.state))
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => deployment_from_row(&row),
            Err(e) if is_unique_violation(&e) => {
                let active: i64 = sqlx::query_scalar(
                    "SELECT id FROM deployments WHERE environment = ? AND active = 1",
                )
                .bind(&deployment.environment)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error("reading the active deployment"))?
                .unwrap_or(0);
                Err(StoreError::Busy {
                    environment: deployment.environment,
                    active,
                })
            }
            Err(e) => Err(query_error("recording a deployment")(e)),
        }
    }

    async fn update_deployment(
        &self,
        id: i64,
        update: &DeploymentUpdate,
        environment: Option<&EnvironmentState>,
    ) -> Result<DeploymentRecord, StoreError> {
        let time_ms = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("starting a transaction"))?;
        let row = sqlx::query(
            "UPDATE deployments SET status = ?, active = ?, reason = ?, state = ?, updated_ms = ?, \
                    finished_ms = CASE WHEN ? THEN NULL ELSE COALESCE(finished_ms, ?) END \
             WHERE id = ? RETURNING *",
        )
        .bind(&update.status)
        .bind(i64::from(update.active))
        .bind(&update.reason)
        .bind(json_text(&update.state))
        .bind(time_ms)
        .bind(update.active)
        .bind(time_ms)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error("updating a deployment"))?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployment",
            key: id.to_string(),
        })?;
        let record = deployment_from_row(&row)?;
        if let Some(state) = environment {
            write_environment_state(&mut tx, &record.environment, state).await?;
        }
        tx.commit()
            .await
            .map_err(query_error("committing a deployment update"))?;
        Ok(record)
    }

    async fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError> {
        sqlx::query("SELECT * FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a deployment"))?
            .as_ref()
            .map(deployment_from_row)
            .transpose()
    }

    async fn deployments(
        &self,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM deployments WHERE (? IS NULL OR environment = ?) \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(environment)
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading deployments"))?
        .iter()
        .map(deployment_from_row)
        .collect()
    }

    async fn live_environments(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT environment FROM environment_state WHERE current_release IS NOT NULL \
             UNION SELECT environment FROM deployments WHERE active = 1 ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading which environments run"))
    }

    async fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        sqlx::query("SELECT * FROM deployments WHERE active = 1 ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("reading active deployments"))?
            .iter()
            .map(deployment_from_row)
            .collect()
    }

    async fn environment_state(&self, environment: &str) -> Result<EnvironmentState, StoreError> {
        let row = sqlx::query("SELECT * FROM environment_state WHERE environment = ?")
            .bind(environment)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading an environment's state"))?;
        let Some(row) = row else {
            return Ok(EnvironmentState {
                data: serde_json::json!({}),
                ..EnvironmentState::default()
            });
        };
        Ok(EnvironmentState {
            current_release: row.get("current_release"),
            previous_release: row.get("previous_release"),
            data: parse_json(row.get("data"), "environment state")?,
        })
    }

    async fn set_environment_state(
        &self,
        environment: &str,
        state: &EnvironmentState,
    ) -> Result<(), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_error("writing an environment's state"))?;
        write_environment_state(&mut conn, environment, state).await
    }

    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO runs (environment, git_ref, commit_sha, commit_time_ms, trigger, status, \
                               created_ms, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&run.environment)
        .bind(&run.git_ref)
        .bind(&run.commit)
        .bind(run.commit_time.map(|t| t.as_millisecond()))
        .bind(&run.trigger)
        .bind(&run.status)
        .bind(now_ms())
        .bind(json_text(&run.state))
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("recording a run"))?;
        run_from_row(&row)
    }

    async fn update_run(&self, id: i64, update: &RunUpdate) -> Result<RunRecord, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE runs SET status = ?, reason = ?, failed_step = ?, state = ?, \
                    started_ms = CASE WHEN ? THEN COALESCE(started_ms, ?) ELSE started_ms END, \
                    finished_ms = CASE WHEN ? THEN COALESCE(finished_ms, ?) ELSE finished_ms END \
             WHERE id = ? RETURNING *",
        )
        .bind(&update.status)
        .bind(&update.reason)
        .bind(&update.failed_step)
        .bind(json_text(&update.state))
        .bind(update.started)
        .bind(now)
        .bind(update.finished)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("updating a run"))?
        .ok_or_else(|| StoreError::NotFound {
            what: "run",
            key: id.to_string(),
        })?;
        run_from_row(&row)
    }

    async fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading a run"))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let statuses = serde_json::to_string(&query.statuses).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "SELECT * FROM runs WHERE (? IS NULL OR environment = ?) AND (? IS NULL OR commit_sha = ?) \
               AND (json_array_length(?) = 0 OR status IN (SELECT value FROM json_each(?))) \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(&query.environment)
        .bind(&query.environment)
        .bind(&query.commit)
        .bind(&query.commit)
        .bind(&statuses)
        .bind(&statuses)
        .bind(i64::from(query.limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading runs"))?
        .iter()
        .map(run_from_row)
        .collect()
    }

    async fn alerting_state(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT state FROM alerting_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("reading the alerting state"))
    }

    async fn commit_alerting(
        &self,
        state: &str,
        history: &[NewAlertEvent],
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("committing alerts"))?;
        sqlx::query(
            "INSERT INTO alerting_state (id, time_ms, state) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET time_ms = excluded.time_ms, state = excluded.state",
        )
        .bind(now_ms())
        .bind(state)
        .execute(&mut *tx)
        .await
        .map_err(query_error("saving the alerting state"))?;
        for h in history {
            sqlx::query(
                "INSERT INTO alert_history (time_ms, rule, status, severity, labels, value, actor) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(h.time_ms)
            .bind(&h.rule)
            .bind(&h.status)
            .bind(&h.severity)
            .bind(json_text(&h.labels))
            .bind(h.value.filter(|v| v.is_finite()))
            .bind(&h.actor)
            .execute(&mut *tx)
            .await
            .map_err(query_error("appending alert history"))?;
        }
        for n in notifications {
            sqlx::query(
                "INSERT INTO outbox (key, channel, payload, created_ms, next_ms) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&n.key)
            .bind(&n.channel)
            .bind(&n.payload)
            .bind(n.created_ms)
            .bind(n.created_ms)
            .execute(&mut *tx)
            .await
            .map_err(query_error("queuing a notification"))?;
        }
        tx.commit().await.map_err(query_error("committing alerts"))
    }

    async fn alert_history(
        &self,
        query: &AlertHistoryQuery,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        let oldest = query.after.is_some() || query.since_ms.is_some();
        sqlx::query(if oldest {
            "SELECT * FROM alert_history WHERE (? IS NULL OR rule = ?) AND id > ? \
             AND time_ms >= ? ORDER BY id LIMIT ?"
        } else {
            "SELECT * FROM alert_history WHERE (? IS NULL OR rule = ?) AND id > ? \
             AND time_ms >= ? ORDER BY id DESC LIMIT ?"
        })
        .bind(&query.rule)
        .bind(&query.rule)
        .bind(query.after.unwrap_or(0))
        .bind(query.since_ms.unwrap_or(i64::MIN))
        .bind(i64::from(query.limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading alert history"))?
        .iter()
        .map(|r| {
            Ok(AlertEvent {
                id: r
                    .try_get("id")
                    .map_err(query_error("reading alert history"))?,
                event: NewAlertEvent {
                    time_ms: r
                        .try_get("time_ms")
                        .map_err(query_error("reading alert history"))?,
                    rule: r
                        .try_get("rule")
                        .map_err(query_error("reading alert history"))?,
                    status: r
                        .try_get("status")
                        .map_err(query_error("reading alert history"))?,
                    severity: r
                        .try_get("severity")
                        .map_err(query_error("reading alert history"))?,
                    labels: serde_json::from_str(
                        &r.try_get::<String, _>("labels")
                            .map_err(query_error("reading alert history"))?,
                    )
                    .unwrap_or_default(),
                    value: r
                        .try_get("value")
                        .map_err(query_error("reading alert history"))?,
                    actor: r
                        .try_get("actor")
                        .map_err(query_error("reading alert history"))?,
                },
            })
        })
        .collect()
    }

    async fn due_notifications(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE sent_ms IS NULL ORDER BY seq LIMIT ?")
            .bind(i64::from(limit.max(1)) * 4)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("reading the outbox"))?;
        let mut blocked = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &rows {
            let e = outbox_from_row(r)?;
            if blocked.contains(&e.channel) {
                continue;
            }
            if e.next_ms > now_ms {
                // Not due: neither are the channel's later ones, which must follow it.
                blocked.insert(e.channel.clone());
                continue;
            }
            out.push(e);
            if out.len() >= limit.max(1) as usize {
                break;
            }
        }
        Ok(out)
    }

    async fn notification_sent(&self, seq: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET sent_ms = ?, attempts = attempts + 1 WHERE seq = ?")
            .bind(now_ms)
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(query_error("marking a notification sent"))?;
        Ok(())
    }

    async fn notification_failed(
        &self,
        seq: i64,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_ms = ?, last_error = ? WHERE seq = ?",
        )
        .bind(next_ms)
        .bind(error)
        .bind(seq)
        .execute(&self.pool)
        .await
        .map_err(query_error("recording a failed notification"))?;
        Ok(())
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        sqlx::query("SELECT * FROM outbox ORDER BY seq DESC LIMIT ?")
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("reading the outbox"))?
            .iter()
            .map(outbox_from_row)
            .collect()
    }

    async fn create_incident(
        &self,
        incident: &IncidentRecord,
        opened: &NewIncidentEntry,
    ) -> Result<(IncidentRecord, bool), StoreError> {
        let doing = "creating an incident";
        let mut tx = self.pool.begin().await.map_err(query_error(doing))?;
        if let Some(event) = incident.alert_event {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT record FROM incidents WHERE alert_event = ?")
                    .bind(event)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_error(doing))?;
            if let Some(record) = existing {
                return Ok((incident_from_text(&record)?, false));
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO incidents (opened_ms, status, grp, alert_event, record) \
             VALUES (?, ?, ?, ?, '{}') RETURNING id",
        )
        .bind(incident.opened_ms)
        .bind(&incident.status)
        .bind(&incident.group)
        .bind(incident.alert_event)
        .fetch_one(&mut *tx)
        .await
        .map_err(query_error(doing))?;
        let mut created = incident.clone();
        created.id = id;
        sqlx::query("UPDATE incidents SET record = ? WHERE id = ?")
            .bind(incident_text(&created))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query_error(doing))?;
        insert_incident_entry(&mut tx, id, opened).await?;
        tx.commit().await.map_err(query_error(doing))?;
        Ok((created, true))
    }

    async fn update_incident(
        &self,
        incident: &IncidentRecord,
        entry: &NewIncidentEntry,
    ) -> Result<(), StoreError> {
        let doing = "updating an incident";
        let mut tx = self.pool.begin().await.map_err(query_error(doing))?;
        let updated =
            sqlx::query("UPDATE incidents SET status = ?, grp = ?, record = ? WHERE id = ?")
                .bind(&incident.status)
                .bind(&incident.group)
                .bind(incident_text(incident))
                .bind(incident.id)
                .execute(&mut *tx)
                .await
                .map_err(query_error(doing))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "incident",
                key: incident.id.to_string(),
            });
        }
        insert_incident_entry(&mut tx, incident.id, entry).await?;
        tx.commit().await.map_err(query_error(doing))
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM incidents WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error("reading an incident"))?;
        record.as_deref().map(incident_from_text).transpose()
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<IncidentRecord>, StoreError> {
        let records: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM incidents WHERE (? = 0 OR status != 'resolved') \
             AND opened_ms >= ? ORDER BY id DESC LIMIT ?",
        )
        .bind(query.open)
        .bind(query.since_ms.unwrap_or(i64::MIN))
        .bind(i64::from(query.limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading incidents"))?;
        records.iter().map(|r| incident_from_text(r)).collect()
    }

    async fn incident_log(&self, incident: i64) -> Result<Vec<IncidentEntry>, StoreError> {
        let doing = "reading an incident's log";
        let rows = sqlx::query("SELECT * FROM incident_log WHERE incident = ? ORDER BY id")
            .bind(incident)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(doing))?;
        rows.iter()
            .map(|r| {
                Ok(IncidentEntry {
                    id: r.try_get("id").map_err(query_error(doing))?,
                    incident: r.try_get("incident").map_err(query_error(doing))?,
                    entry: NewIncidentEntry {
                        time_ms: r.try_get("time_ms").map_err(query_error(doing))?,
                        kind: r.try_get("kind").map_err(query_error(doing))?,
                        actor: r.try_get("actor").map_err(query_error(doing))?,
                        message: r.try_get("message").map_err(query_error(doing))?,
                        data: parse_json(
                            r.try_get::<&str, _>("data").map_err(query_error(doing))?,
                            "incident log entry",
                        )?,
                    },
                })
            })
            .collect()
    }

    async fn add_action(&self, action: &NewAction) -> Result<ActionRecord, StoreError> {
        let doing = "adding an action item";
        if self.incident(action.incident).await?.is_none() {
            return Err(StoreError::NotFound {
                what: "incident",
                key: action.incident.to_string(),
            });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO incident_actions (incident, text, owner, due, created_ms) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(action.incident)
        .bind(&action.text)
        .bind(&action.owner)
        .bind(&action.due)
        .bind(action.created_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(doing))?;
        Ok(ActionRecord {
            id,
            incident: action.incident,
            text: action.text.clone(),
            owner: action.owner.clone(),
            due: action.due.clone(),
            created_ms: action.created_ms,
            done_ms: None,
        })
    }

    async fn set_action_done(
        &self,
        id: i64,
        done_ms: Option<i64>,
    ) -> Result<ActionRecord, StoreError> {
        let row = sqlx::query("UPDATE incident_actions SET done_ms = ? WHERE id = ? RETURNING *")
            .bind(done_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("marking an action item"))?;
        match row {
            Some(r) => action_from_row(&r),
            None => Err(StoreError::NotFound {
                what: "action item",
                key: id.to_string(),
            }),
        }
    }

    async fn actions(
        &self,
        incident: Option<i64>,
        open: bool,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM incident_actions WHERE (? IS NULL OR incident = ?) \
             AND (? = 0 OR done_ms IS NULL) ORDER BY id",
        )
        .bind(incident)
        .bind(incident)
        .bind(open)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading action items"))?
        .iter()
        .map(action_from_row)
        .collect()
    }
}

fn outbox_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<OutboxEntry, StoreError> {
    let e = query_error("reading the outbox");
    let get = |name: &'static str| r.try_get::<i64, _>(name);
    Ok(OutboxEntry {
        seq: get("seq").map_err(query_error("reading the outbox"))?,
        key: r
            .try_get("key")
            .map_err(query_error("reading the outbox"))?,
        channel: r
            .try_get("channel")
            .map_err(query_error("reading the outbox"))?,
        payload: r
            .try_get("payload")
            .map_err(query_error("reading the outbox"))?,
        created_ms: get("created_ms").map_err(query_error("reading the outbox"))?,
        attempts: get("attempts").map_err(query_error("reading the outbox"))?,
        next_ms: get("next_ms").map_err(query_error("reading the outbox"))?,
        sent_ms: r
            .try_get("sent_ms")
            .map_err(query_error("reading the outbox"))?,
        last_error: r.try_get("last_error").map_err(e)?,
    })
}

async fn write_environment_state(
    conn: &mut sqlx::SqliteConnection,
    environment: &str,
    state: &EnvironmentState,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO environment_state (environment, current_release, previous_release, data) \
         VALUES (?, ?, ?, ?) ON CONFLICT (environment) DO UPDATE SET \
           current_release = excluded.current_release, \
           previous_release = excluded.previous_release, data = excluded.data",
    )
    .bind(environment)
    .bind(state.current_release)
    .bind(state.previous_release)
    .bind(json_text(&state.data))
    .execute(conn)
    .await
    .map_err(query_error("writing an environment's state"))?;
    Ok(())
}

fn incident_text(incident: &IncidentRecord) -> String {
    serde_json::to_string(incident).unwrap_or_default()
}

fn incident_from_text(text: &str) -> Result<IncidentRecord, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: "incident",
        source,
    })
}

async fn insert_incident_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    incident: i64,
    entry: &NewIncidentEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_log (incident, time_ms, kind, actor, message, data) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(incident)
    .bind(entry.time_ms)
    .bind(&entry.kind)
    .bind(&entry.actor)
    .bind(&entry.message)
    .bind(json_text(&entry.data))
    .execute(&mut **tx)
    .await
    .map_err(query_error("appending to an incident's log"))?;
    Ok(())
}

fn action_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ActionRecord, StoreError> {
    let doing = "reading action items";
    Ok(ActionRecord {
        id: r.try_get("id").map_err(query_error(doing))?,
        incident: r.try_get("incident").map_err(query_error(doing))?,
        text: r.try_get("text").map_err(query_error(doing))?,
        owner: r.try_get("owner").map_err(query_error(doing))?,
        due: r.try_get("due").map_err(query_error(doing))?,
        created_ms: r.try_get("created_ms").map_err(query_error(doing))?,
        done_ms: r.try_get("done_ms").map_err(query_error(doing))?,
    })
}
