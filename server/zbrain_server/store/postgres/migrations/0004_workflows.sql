-- Version 4. Never edit a released migration: add the next one.
-- Workflows: dependencies between jobs, delayed jobs, reruns, job templates
-- and schedules (see docs/workflows.md and store/graph.py).

-- A job's parents as a JSON array of {job_id, condition}; how many have yet
-- to meet their condition; whether any job waits for it; its distance from
-- the roots of its graph; the job it reruns.
ALTER TABLE jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN has_children INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN rerun_of TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX jobs_reruns ON jobs (rerun_of) WHERE rerun_of != '';
CREATE INDEX jobs_due ON jobs (next_run_time) WHERE state = 'SCHEDULED';

-- One row per dependency, found from the parent when it ends, and from the
-- child when its parent is purged.
CREATE TABLE job_edges (
    parent_id TEXT COLLATE "C" NOT NULL,
    child_id  TEXT COLLATE "C" NOT NULL,
    condition TEXT NOT NULL,          -- SUCCEEDED or FINISHED
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX job_edges_by_child ON job_edges (child_id);

-- Every version of every template; a version never changes. The job is a
-- serialized zbrain.v1.JobSpec, opaque to the store.
CREATE TABLE templates (
    org_id      TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    version     INTEGER NOT NULL,
    job_spec    BYTEA NOT NULL,
    parameters  TEXT NOT NULL,        -- JSON array of {name, type, required, default_json, description}
    description TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (org_id, name, version)
);

-- Schedules; next_fire_time is NULL while paused.
CREATE TABLE schedules (
    org_id              TEXT COLLATE "C" NOT NULL,
    id                  TEXT COLLATE "C" NOT NULL,
    cron                TEXT NOT NULL,
    time_zone           TEXT NOT NULL,
    interval_us         BIGINT NOT NULL,  -- 0 with a cron expression
    job_spec            BYTEA NOT NULL,       -- empty with a template
    template_name       TEXT NOT NULL,
    template_version    INTEGER NOT NULL,
    template_parameters TEXT NOT NULL,     -- JSON object of JSON texts
    overlap             TEXT NOT NULL,
    catch_up            TEXT NOT NULL,
    paused              INTEGER NOT NULL,
    next_fire_time      BIGINT,
    last_fire_time      BIGINT,
    last_job_id         TEXT NOT NULL,
    create_time         BIGINT NOT NULL,
    update_time         BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX schedules_due ON schedules (next_fire_time) WHERE next_fire_time IS NOT NULL;
