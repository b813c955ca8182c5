-- Version 8. Never edit a released migration: add the next one.
-- Storage used by each organisation (docs/limits.md, storage quotas): the
-- bytes of log text and of artifacts its stored jobs hold, moved once per
-- group commit by the sum of the group's appends and uploads (in
-- finish_group), and down when retention deletes jobs. Started from what is
-- stored already.
CREATE TABLE org_usage (
    org_id          TEXT PRIMARY KEY,
    log_bytes       BIGINT NOT NULL DEFAULT 0,
    artifact_bytes  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO org_usage (org_id, log_bytes, artifact_bytes)
SELECT jobs.org_id, sum(jobs.log_bytes),
    coalesce(sum((SELECT sum(size_bytes) FROM artifacts WHERE artifacts.job_id = jobs.id)), 0)
FROM jobs GROUP BY jobs.org_id;

-- The worker streams connected to each replica (store/workers.py), so that
-- every replica knows every worker: ListWorkers, and whether a waiting job
-- has any worker that matches. Each replica rewrites its own rows when a
-- worker connects or leaves and every few seconds; a row not refreshed
-- within the TTL (a replica that died) counts for nothing and is deleted.
CREATE TABLE connected_workers (
    replica_id       TEXT NOT NULL,
    worker_id        TEXT NOT NULL,
    address          TEXT NOT NULL,
    org_ids          TEXT NOT NULL,  -- a JSON array
    labels           TEXT NOT NULL,  -- a JSON object
    slots            INTEGER NOT NULL,
    lease_job_ids    TEXT NOT NULL,  -- a JSON array
    draining         BOOLEAN NOT NULL,
    connect_time     BIGINT NOT NULL,
    last_heard_time  BIGINT NOT NULL,
    refresh_time     BIGINT NOT NULL,
    PRIMARY KEY (replica_id, worker_id)
);

-- The runnable jobs of each concurrency key, in the key's leasing order: the
-- lease rotates among an org's keys (store/orgs.py), listing them with one
-- index probe per key and reading each key's first jobs. Jobs without a key
-- are not in it, so their submits pay nothing for it.
CREATE INDEX jobs_runnable_by_key ON jobs (org_id, concurrency_key, priority DESC, id)
    WHERE state IN ('PENDING', 'RETRYING') AND concurrency_key != '';
