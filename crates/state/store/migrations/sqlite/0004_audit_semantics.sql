-- The audit log answers "who did what to which environment, and why": a semantic action
-- (`environment.freeze`, `deploy.start`), the environment, the reason given, the request id,
-- and what the row is about (`deployment-20`), so work that ends later (a deploy) gets its
-- final outcome. Rows stay append-only; a final outcome is written once, in a table of its
-- own that is append-only too.
ALTER TABLE audit ADD COLUMN environment TEXT;
ALTER TABLE audit ADD COLUMN reason TEXT;
ALTER TABLE audit ADD COLUMN request_id TEXT;
ALTER TABLE audit ADD COLUMN subject TEXT;
CREATE INDEX IF NOT EXISTS audit_by_environment ON audit (environment, id);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit (subject);

CREATE TABLE IF NOT EXISTS audit_outcomes (
    audit_id INTEGER PRIMARY KEY REFERENCES audit (id),
    time_ms  INTEGER NOT NULL,
    outcome  TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_outcomes_no_update BEFORE UPDATE ON audit_outcomes
BEGIN SELECT RAISE(ABORT, 'an audit outcome is written once'); END;
CREATE TRIGGER IF NOT EXISTS audit_outcomes_no_delete BEFORE DELETE ON audit_outcomes
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
