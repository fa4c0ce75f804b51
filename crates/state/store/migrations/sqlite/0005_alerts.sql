-- Alerts. `alerting_state` holds one JSON document: every rule's alerts (pending, firing) and
-- the router's groups, saved whole after each evaluation that changed something, in the same
-- transaction as the history rows and the notifications it decided. So a restart neither
-- loses nor repeats a firing alert, and a notification is either queued with the change that
-- caused it or not at all.
CREATE TABLE IF NOT EXISTS alerting_state (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    time_ms INTEGER NOT NULL,
    state   TEXT    NOT NULL
);

-- What alerts did: fired, resolved, acknowledged. Append-only.
CREATE TABLE IF NOT EXISTS alert_history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms  INTEGER NOT NULL,
    rule     TEXT    NOT NULL,
    status   TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    labels   TEXT    NOT NULL,
    value    REAL,
    actor    TEXT
);
CREATE INDEX IF NOT EXISTS alert_history_by_rule ON alert_history (rule, id);
CREATE TRIGGER IF NOT EXISTS alert_history_no_update BEFORE UPDATE ON alert_history
BEGIN SELECT RAISE(ABORT, 'alert history is append-only'); END;

-- The outbox: every notification is written here before it is sent, and marked when it has
-- been. `key` (the group and its notification number) is unique, so queuing one twice is a
-- no-op; the sender goes through each channel's rows in order, retrying with backoff.
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT    NOT NULL UNIQUE,
    channel    TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_ms    INTEGER NOT NULL,
    sent_ms    INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_ms, seq);
