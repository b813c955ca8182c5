-- Version 1. Never edit a released migration: add the next one.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL,
    cmd               TEXT NOT NULL,        -- JSON array of strings
    input_json        TEXT NOT NULL,
    env               TEXT NOT NULL,        -- JSON object
    timeout_us        INTEGER NOT NULL,
    max_retries       INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    labels            TEXT NOT NULL,        -- JSON object
    state             TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    create_time       INTEGER NOT NULL,     -- all times: microseconds since the epoch
    update_time       INTEGER NOT NULL,
    start_time        INTEGER,
    finish_time       INTEGER,
    next_run_time     INTEGER,
    last_error        TEXT NOT NULL,
    output_json       TEXT NOT NULL,
    lease_epoch       INTEGER NOT NULL,
    worker_id         TEXT NOT NULL,
    lease_expire_time INTEGER,
    cancel_requested  INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    trace_context     TEXT NOT NULL,        -- JSON object
    log_count         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_org ON jobs (org_id, id);
CREATE INDEX jobs_by_org_state ON jobs (org_id, state, id);
CREATE INDEX jobs_runnable ON jobs (org_id, priority DESC, id)
    WHERE state IN ('PENDING', 'RETRYING');
CREATE INDEX jobs_running ON jobs (lease_expire_time) WHERE state = 'RUNNING';
CREATE INDEX jobs_finished ON jobs (finish_time) WHERE finish_time IS NOT NULL;
CREATE UNIQUE INDEX jobs_request_id ON jobs (org_id, request_id) WHERE request_id != '';

CREATE TABLE logs (
    job_id   TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    time     INTEGER NOT NULL,
    text     TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;

CREATE TABLE artifacts (
    job_id     TEXT NOT NULL,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE INDEX artifacts_by_blob ON artifacts (sha256);
