-- Version 1. Never edit a released migration: add the next one.
CREATE TABLE jobs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    org_id            TEXT COLLATE "C" NOT NULL,
    cmd               TEXT NOT NULL,        -- JSON array of strings
    input_json        TEXT NOT NULL,
    env               TEXT NOT NULL,        -- JSON object
    timeout_us        BIGINT NOT NULL,
    max_retries       INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    labels            TEXT NOT NULL,        -- JSON object
    state             TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    create_time       BIGINT NOT NULL,      -- all times: microseconds since the epoch
    update_time       BIGINT NOT NULL,
    start_time        BIGINT,
    finish_time       BIGINT,
    next_run_time     BIGINT,
    last_error        TEXT NOT NULL,
    output_json       TEXT NOT NULL,
    lease_epoch       BIGINT NOT NULL,
    worker_id         TEXT NOT NULL,
    lease_expire_time BIGINT,
    cancel_requested  INTEGER NOT NULL,
    request_id        TEXT COLLATE "C" NOT NULL,
    trace_context     TEXT NOT NULL,        -- JSON object
    log_count         BIGINT NOT NULL DEFAULT 0,
    log_bytes         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_org ON jobs (org_id, id);
CREATE INDEX jobs_by_org_state ON jobs (org_id, state, id);
CREATE INDEX jobs_runnable ON jobs (org_id, priority DESC, id)
    WHERE state IN ('PENDING', 'RETRYING');
CREATE INDEX jobs_running ON jobs (lease_expire_time) WHERE state = 'RUNNING';
CREATE INDEX jobs_finished ON jobs (finish_time) WHERE finish_time IS NOT NULL;
CREATE UNIQUE INDEX jobs_request_id ON jobs (org_id, request_id) WHERE request_id != '';

-- Waiting (PENDING or RETRYING) jobs per org, kept exact in the transaction
-- of every change, so the quota check reads one row instead of counting.
CREATE TABLE org_waiting (
    org_id  TEXT COLLATE "C" PRIMARY KEY,
    waiting BIGINT NOT NULL
);

CREATE TABLE logs (
    job_id   TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    time     BIGINT NOT NULL,
    text     BYTEA NOT NULL,  -- UTF-8: program output may hold NUL, which TEXT cannot
    PRIMARY KEY (job_id, sequence)
);

CREATE TABLE artifacts (
    job_id     TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    sha256     TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE INDEX artifacts_by_blob ON artifacts (sha256);

CREATE TABLE events (
    sequence       BIGINT PRIMARY KEY,  -- from the counter row, in commit order
    topic          TEXT COLLATE "C" NOT NULL,
    org_id         TEXT COLLATE "C" NOT NULL,
    job_id         TEXT NOT NULL,
    time           BIGINT NOT NULL,
    payload        BYTEA NOT NULL,      -- a serialized zbrain.v1.Event with its payload only
    last_of_commit BOOLEAN NOT NULL     -- so the listener gets one batch per transaction
);
CREATE INDEX events_by_org ON events (org_id, sequence);
CREATE INDEX events_by_time ON events (time);

CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('last_sequence', 0), ('events_purged_through', 0);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    org_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    description TEXT NOT NULL,
    secret_hash TEXT NOT NULL,  -- SHA-256 of the secret; the secret is never stored
    create_time BIGINT NOT NULL,
    revoke_time BIGINT
);
