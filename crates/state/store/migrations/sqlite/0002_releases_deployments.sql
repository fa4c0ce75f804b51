-- Releases, deployments and each environment's release pointers.

-- A release is immutable: what it runs (version, resolved configuration) never changes after
-- it is recorded; only its pinned and pruned flags do.
CREATE TABLE IF NOT EXISTS releases (
    environment TEXT    NOT NULL,
    number      INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    description TEXT    NOT NULL,
    snapshot    TEXT    NOT NULL,
    pinned      INTEGER NOT NULL DEFAULT 0,
    pruned      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment, number)
);

CREATE TRIGGER IF NOT EXISTS releases_are_immutable
BEFORE UPDATE OF environment, number, version, time_ms, description, snapshot ON releases
BEGIN SELECT RAISE(ABORT, 'a release is immutable'); END;
CREATE TRIGGER IF NOT EXISTS releases_are_kept BEFORE DELETE ON releases
BEGIN SELECT RAISE(ABORT, 'releases are pruned, never deleted'); END;

-- Deployments (and rollbacks): the persisted state machine of each.
CREATE TABLE IF NOT EXISTS deployments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    environment  TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    release      INTEGER NOT NULL,
    from_release INTEGER,
    status       TEXT    NOT NULL,
    active       INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    finished_ms  INTEGER,
    reason       TEXT,
    state        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_by_environment ON deployments (environment, id);
-- One deployment at a time per environment, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS one_active_deployment_per_environment
    ON deployments (environment) WHERE active = 1;

-- Which release each environment runs, and what else the deploy engine must remember of it.
CREATE TABLE IF NOT EXISTS environment_state (
    environment      TEXT PRIMARY KEY,
    current_release  INTEGER,
    previous_release INTEGER,
    data             TEXT NOT NULL DEFAULT '{}'
);
