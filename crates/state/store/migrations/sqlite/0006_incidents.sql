-- Incidents. `incidents` keeps each one's current record (JSON) beside the columns it is
-- looked up by; `alert_event` is unique, so the alert history row that opens an incident
-- opens one however often it is read (a restart between the two is harmless). The log is
-- append-only: the timeline's own lines and the audit of what people did to the incident.
CREATE TABLE IF NOT EXISTS incidents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    opened_ms   INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    grp         TEXT,
    alert_event INTEGER UNIQUE,
    record      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_status ON incidents (status, id);

CREATE TABLE IF NOT EXISTS incident_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    incident INTEGER NOT NULL REFERENCES incidents (id),
    time_ms  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    message  TEXT    NOT NULL,
    data     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incident_log_by_incident ON incident_log (incident, id);
CREATE TRIGGER IF NOT EXISTS incident_log_no_update BEFORE UPDATE ON incident_log
BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS incident_log_no_delete BEFORE DELETE ON incident_log
BEGIN SELECT RAISE(ABORT, 'the incident log is append-only'); END;

CREATE TABLE IF NOT EXISTS incident_actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    incident   INTEGER NOT NULL REFERENCES incidents (id),
    text       TEXT    NOT NULL,
    owner      TEXT,
    due        TEXT,
    created_ms INTEGER NOT NULL,
    done_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS incident_actions_by_incident ON incident_actions (incident, id);

-- Alert history read from a time on (an incident's timeline).
CREATE INDEX IF NOT EXISTS alert_history_by_time ON alert_history (time_ms);
-- Events read from a time on.
CREATE INDEX IF NOT EXISTS events_by_time ON events (time_ms);
