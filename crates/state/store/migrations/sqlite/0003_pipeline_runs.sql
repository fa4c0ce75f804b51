-- Pipeline runs: one row per run, its stages, jobs and steps in `state` (opaque JSON).
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment    TEXT    NOT NULL,
    git_ref        TEXT    NOT NULL,
    commit_sha     TEXT    NOT NULL,
    commit_time_ms INTEGER,
    trigger        TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    created_ms     INTEGER NOT NULL,
    started_ms     INTEGER,
    finished_ms    INTEGER,
    reason         TEXT,
    failed_step    TEXT,
    state          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_environment ON runs (environment, id);
CREATE INDEX IF NOT EXISTS runs_by_commit ON runs (commit_sha, environment, status);
