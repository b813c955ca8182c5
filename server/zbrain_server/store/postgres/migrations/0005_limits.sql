-- Version 5. Never edit a released migration: add the next one.
-- Sharing a server between teams (see docs/limits.md and core/limits.py):
-- concurrency keys and worker requirements on jobs, each organisation's
-- settings, and the token bucket of its starts per second.

ALTER TABLE jobs ADD COLUMN concurrency_key TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN requires TEXT NOT NULL DEFAULT '{}';  -- JSON object
-- Counting the running jobs of an org, and of a key, in the lease transaction.
CREATE INDEX jobs_running_by_org ON jobs (org_id, concurrency_key) WHERE state = 'RUNNING';

-- One row per organisation whose settings were ever changed; 0 means none
-- of its own (the server's default where there is one).
CREATE TABLE org_settings (
    org_id                TEXT COLLATE "C" PRIMARY KEY,
    max_running_jobs      INTEGER NOT NULL DEFAULT 0,
    max_starts_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_waiting_jobs      INTEGER NOT NULL DEFAULT 0,
    max_log_bytes         BIGINT NOT NULL DEFAULT 0,
    max_artifact_bytes    BIGINT NOT NULL DEFAULT 0,
    retention_days        INTEGER NOT NULL DEFAULT 0,
    paused                INTEGER NOT NULL DEFAULT 0,
    paused_selectors      TEXT NOT NULL DEFAULT '[]',  -- JSON array of label objects
    update_time           BIGINT NOT NULL
);

-- The starts-per-second bucket: tokens left at refill_time.
CREATE TABLE org_buckets (
    org_id      TEXT COLLATE "C" PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    refill_time BIGINT NOT NULL
);
