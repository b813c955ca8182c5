-- Every statement the SQLite store runs, by name (see store/queries.py).
-- Writes run inside the writer's BEGIN IMMEDIATE transaction, so a plain
-- SELECT already sees the rows as no other writer can change them: the
-- "lock_" queries need no locking clause here. List parameters arrive as
-- JSON text, read with json_each.

-- name: select_job
SELECT * FROM jobs WHERE id = :id;

-- name: lock_job
SELECT * FROM jobs WHERE id = :id;

-- name: lock_jobs
-- Several jobs, in id order, as every writer of several jobs takes them.
SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id;

-- name: jobs_by_request_ids
-- The jobs holding these (org, request id) pairs, given as two lists.
SELECT jobs.* FROM json_each(:org_ids) AS o
JOIN json_each(:request_ids) AS r ON r.key = o.key
JOIN jobs ON jobs.org_id = o.value AND jobs.request_id = r.value;

-- name: artifacts_of
SELECT job_id, name, sha256, size_bytes FROM artifacts
WHERE job_id IN (SELECT value FROM json_each(:ids)) ORDER BY job_id, name;

-- name: insert_job
-- A request id another job of the org holds already is skipped: the caller
-- counts what was inserted.
INSERT INTO jobs (
    id, org_id, cmd, input_json, env, timeout_us, max_retries, priority, labels,
    create_time, state, attempt, update_time, start_time, finish_time, next_run_time,
    last_error, output_json, lease_epoch, worker_id, lease_expire_time, cancel_requested,
    request_id, trace_context, previous_state, cause, reason, transition_time,
    concurrency_key, concurrency_limit, requires, resources, network
) VALUES (
    :id, :org_id, :cmd, :input_json, :env, :timeout_us, :max_retries, :priority, :labels,
    :create_time, :state, :attempt, :update_time, :start_time, :finish_time, :next_run_time,
    :last_error, :output_json, :lease_epoch, :worker_id, :lease_expire_time, :cancel_requested,
    :request_id, :trace_context, :previous_state, :cause, :reason, :transition_time,
    :concurrency_key, :concurrency_limit, :requires, :resources, :network
) ON CONFLICT DO NOTHING;

-- name: save_job
-- Compare-and-set: the row is written only if nobody changed it since it was read.
UPDATE jobs SET
    state = :state, attempt = :attempt, update_time = :update_time,
    start_time = :start_time, finish_time = :finish_time, next_run_time = :next_run_time,
    last_error = :last_error, output_json = :output_json, lease_epoch = :lease_epoch,
    worker_id = :worker_id, worker_incarnation = :worker_incarnation,
    lease_expire_time = :lease_expire_time, cancel_requested = :cancel_requested, previous_state = :previous_state, cause = :cause,
    reason = :reason, transition_time = :transition_time, attempts = :attempts
WHERE id = :id AND state = :old_state AND lease_epoch = :old_lease_epoch;

-- fragment: runnable_for_worker
-- A job of :org_id that may run now (:now) on the worker: the worker's labels
-- (:worker_labels, a JSON object) meet what it requires, and it matches none
-- of the org's paused label selectors (:paused_selectors, a JSON array of
-- objects). The queries that pick jobs for a worker all filter with it, so
-- that the head of a key (key_head) is the job leasing would take.
org_id = :org_id AND state IN ('PENDING', 'RETRYING') AND next_run_time <= :now
    AND (requires = '{}' OR NOT EXISTS (
        SELECT 1 FROM json_each(jobs.requires) AS r
        WHERE NOT EXISTS (
            SELECT 1 FROM json_each(json(:worker_labels)) AS w
            WHERE w.key = r.key AND (r.value = '' OR w.value = r.value))))
    AND (:paused_selectors = '[]' OR NOT EXISTS (
        SELECT 1 FROM json_each(json(:paused_selectors)) AS s
        WHERE NOT EXISTS (
            SELECT 1 FROM json_each(s.value) AS p
            WHERE (SELECT l.value FROM json_each(jobs.labels) AS l WHERE l.key = p.key)
                IS NOT p.value)))

-- name: lock_runnable
-- Up to :limit jobs of one org that may run now on the worker, in leasing
-- order, and not of a skipped concurrency key.
SELECT * FROM jobs
WHERE {runnable_for_worker}
    AND concurrency_key NOT IN (SELECT value FROM json_each(:skipped_keys))
ORDER BY priority DESC, id LIMIT :limit;

-- name: lock_runnable_of_key
-- lock_runnable's jobs of one concurrency key only, in the key's order (for
-- the rotation among an org's keys: jobs_runnable_by_key).
SELECT * FROM jobs
WHERE {runnable_for_worker} AND concurrency_key != '' AND concurrency_key = :concurrency_key
ORDER BY priority DESC, id LIMIT :limit;

-- name: runnable_keys
-- The concurrency keys of an org with runnable jobs, by name, up to :limit:
-- a loose index scan (one index probe per key) over jobs_runnable_by_key, so
-- it costs the same with 20 or 20,000 jobs queued.
WITH RECURSIVE k(key) AS (
    SELECT (SELECT min(concurrency_key) FROM jobs
        WHERE org_id = :org_id AND state IN ('PENDING', 'RETRYING') AND concurrency_key != '')
    UNION ALL
    SELECT (SELECT min(concurrency_key) FROM jobs
        WHERE org_id = :org_id AND state IN ('PENDING', 'RETRYING') AND concurrency_key != ''
            AND concurrency_key > k.key)
    FROM k WHERE k.key IS NOT NULL
)
SELECT key FROM k WHERE key IS NOT NULL LIMIT :limit;

-- name: org_settings_of
SELECT * FROM org_settings WHERE org_id IN (SELECT value FROM json_each(:org_ids));

-- name: save_org_settings
INSERT INTO org_settings (
    org_id, max_running_jobs, max_starts_per_second, max_waiting_jobs, max_log_bytes,
    max_artifact_bytes, retention_days, paused, paused_selectors, update_time
) VALUES (
    :org_id, :max_running_jobs, :max_starts_per_second, :max_waiting_jobs, :max_log_bytes,
    :max_artifact_bytes, :retention_days, :paused, :paused_selectors, :update_time
) ON CONFLICT (org_id) DO UPDATE SET
    max_running_jobs = excluded.max_running_jobs,
    max_starts_per_second = excluded.max_starts_per_second,
    max_waiting_jobs = excluded.max_waiting_jobs, max_log_bytes = excluded.max_log_bytes,
    max_artifact_bytes = excluded.max_artifact_bytes, retention_days = excluded.retention_days,
    paused = excluded.paused, paused_selectors = excluded.paused_selectors,
    update_time = excluded.update_time;

-- name: lock_org_settings
SELECT * FROM org_settings WHERE org_id = :org_id;

-- name: try_lock_limit
-- The writer holds the whole database: a limit's count needs no lock of its own.
SELECT 1 AS locked;

-- name: count_running
SELECT count(*) AS running FROM jobs WHERE org_id = :org_id AND state = 'RUNNING';

-- name: key_head
-- The first job of a concurrency key that the worker could lease now, in
-- leasing order.
SELECT id FROM jobs
WHERE {runnable_for_worker} AND concurrency_key = :concurrency_key
ORDER BY priority DESC, id LIMIT 1;

-- name: count_running_key
SELECT count(*) AS running FROM jobs
WHERE org_id = :org_id AND state = 'RUNNING' AND concurrency_key = :concurrency_key;

-- name: select_bucket
SELECT tokens, refill_time FROM org_buckets WHERE org_id = :org_id;

-- name: save_bucket
INSERT INTO org_buckets (org_id, tokens, refill_time) VALUES (:org_id, :tokens, :refill_time)
ON CONFLICT (org_id) DO UPDATE SET tokens = excluded.tokens, refill_time = excluded.refill_time;

-- name: lock_expired
SELECT * FROM jobs WHERE state = 'RUNNING' AND lease_expire_time < :now;

-- name: lock_overdue
SELECT * FROM jobs WHERE state = 'RUNNING' AND start_time + timeout_us + :grace < :now;

-- name: leases_of
SELECT id, lease_epoch, worker_incarnation FROM jobs
WHERE state = 'RUNNING' AND worker_id = :worker_id;

-- name: next_run_time
SELECT min(next_run_time) AS next_run_time FROM jobs
WHERE org_id IN (SELECT value FROM json_each(:org_ids)) AND state IN ('PENDING', 'RETRYING');

-- name: lock_job_for_logs
SELECT * FROM jobs WHERE id = :id;

-- name: insert_log
INSERT INTO logs (job_id, sequence, stream, attempt, time, text)
VALUES (:job_id, :sequence, :stream, :attempt, :time, :text);

-- name: set_log_count
UPDATE jobs SET log_count = :log_count, log_bytes = :log_bytes WHERE id = :id;

-- name: read_logs
-- A page of a job's lines: at most :limit lines and :max_bytes bytes (but at
-- least one line), sizes counted as core.model.line_size counts them, so a
-- reader that stops reading holds about one streamed message.
SELECT sequence, stream, attempt, time, text FROM logs
WHERE job_id = :job_id AND sequence IN (
    SELECT sequence FROM (
        SELECT sequence, sum(size) OVER (ORDER BY sequence) AS through_bytes,
            row_number() OVER (ORDER BY sequence) AS position
        FROM (
            SELECT sequence, length(CAST(text AS BLOB)) + :overhead AS size FROM logs
            WHERE job_id = :job_id AND sequence > :after ORDER BY sequence LIMIT :limit
        )
    ) WHERE through_bytes <= :max_bytes OR position = 1
)
ORDER BY sequence;

-- name: upsert_artifact
INSERT INTO artifacts (job_id, name, sha256, size_bytes) VALUES (:job_id, :name, :sha256, :size_bytes)
ON CONFLICT (job_id, name) DO UPDATE SET sha256 = excluded.sha256, size_bytes = excluded.size_bytes;

-- fragment: without_unfinished_children
-- Of the finished jobs (`finished`) those no unfinished child depends on: a
-- finished parent stays while a child of it has not finished, since every
-- lease of the child (a retry's too) carries the parent's result.
NOT (has_children = 1 AND EXISTS (
    SELECT 1 FROM job_edges JOIN jobs AS child ON child.id = job_edges.child_id
    WHERE job_edges.parent_id = finished.id
      AND child.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')))

-- name: purgeable
-- Of every org but those with retention days of their own (:own_orgs).
SELECT id FROM jobs AS finished
WHERE finish_time < :before AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')
  AND org_id NOT IN (SELECT value FROM json_each(:own_orgs))
  AND {without_unfinished_children}
LIMIT :limit;

-- name: purgeable_of_org
-- As purgeable, for one org with retention days of its own.
SELECT id FROM jobs AS finished
WHERE org_id = :org_id AND finish_time < :before
  AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')
  AND {without_unfinished_children}
LIMIT :limit;

-- name: all_org_settings
SELECT * FROM org_settings;

-- name: delete_logs_of
DELETE FROM logs WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: delete_artifacts_of
DELETE FROM artifacts WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: delete_jobs
DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: referenced_blobs
SELECT DISTINCT sha256 FROM artifacts;

-- name: count_waiting
SELECT org_id, count(*) AS waiting FROM jobs
WHERE state IN ('PENDING', 'RETRYING', 'BLOCKED', 'SCHEDULED') GROUP BY org_id;

-- name: runnable_requirements
-- Runnable jobs that require worker labels, by org and those labels, for the
-- count of jobs no connected worker can take (jobs_runnable_requiring).
SELECT org_id, requires, count(*) AS jobs FROM jobs
WHERE state IN ('PENDING', 'RETRYING') AND requires != '{}'
GROUP BY org_id, requires;

-- name: count_unfinished
SELECT org_id, state, count(*) AS jobs FROM jobs
WHERE state IN ('PENDING', 'RUNNING', 'RETRYING', 'BLOCKED', 'SCHEDULED')
GROUP BY org_id, state;

-- name: insert_event
INSERT INTO events (sequence, topic, org_id, job_id, time, payload)
VALUES (:sequence, :topic, :org_id, :job_id, :time, :payload);

-- fragment: page_of_events
-- A page of a replay of the events the query's `visible` (the events table,
-- or some of its rows) holds: those after :after under the topic :prefix, at
-- most :limit events and :max_bytes bytes (but at least one event), sizes
-- counted as core.model.event_size counts them, so a reader that stops
-- reading holds about one streamed message. The sizes are summed before any
-- payload is read (length() of a BLOB reads no content; `visible` is not
-- materialized, so this reads the table itself).
SELECT sequence, topic, org_id, job_id, time, payload FROM events
WHERE sequence IN (
    SELECT sequence FROM (
        SELECT sequence, sum(size) OVER (ORDER BY sequence) AS through_bytes,
            row_number() OVER (ORDER BY sequence) AS position
        FROM (
            SELECT sequence, length(payload) + length(topic) + :overhead AS size FROM visible
            WHERE sequence > :after AND substr(topic, 1, length(:prefix)) = :prefix
            ORDER BY sequence LIMIT :limit
        )
    ) WHERE through_bytes <= :max_bytes OR position = 1
)
ORDER BY sequence

-- name: read_events
-- A page of every org's events.
WITH visible AS NOT MATERIALIZED (SELECT * FROM events)
{page_of_events};

-- name: read_org_events
-- A page of one org's events.
WITH visible AS NOT MATERIALIZED (SELECT * FROM events WHERE org_id = :org_id)
{page_of_events};

-- name: last_sequence
SELECT max(sequence) AS sequence FROM events;

-- name: events_through
-- The last event recorded before a time.
SELECT max(sequence) AS sequence FROM events WHERE time < :before;

-- name: delete_events_through
DELETE FROM events WHERE sequence <= :through;

-- name: purged_through
SELECT value FROM meta WHERE key = 'events_purged_through';

-- name: raise_purged_mark
INSERT INTO meta (key, value) VALUES ('events_purged_through', :through)
ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value);

-- name: insert_token
INSERT INTO tokens (id, org_id, role, description, secret_hash, create_time, revoke_time)
VALUES (:id, :org_id, :role, :description, :secret_hash, :create_time, :revoke_time);

-- name: select_token
SELECT * FROM tokens WHERE id = :id;

-- name: list_tokens
SELECT * FROM tokens WHERE :org_id IS NULL OR org_id = :org_id ORDER BY create_time, id;

-- name: revoke_token
UPDATE tokens SET revoke_time = :now WHERE id = :id AND revoke_time IS NULL;

-- name: any_token
SELECT 1 AS found FROM tokens WHERE revoke_time IS NULL LIMIT 1;

-- Workflows: dependencies (store/graph.py), delayed jobs, reruns.

-- name: set_links
UPDATE jobs SET depends_on = :depends_on, waiting_on = :waiting_on,
    has_children = :has_children, depth = :depth, rerun_of = :rerun_of
WHERE id = :id;

-- name: insert_edge
INSERT INTO job_edges (parent_id, child_id, condition) VALUES (:parent_id, :child_id, :condition);

-- name: mark_parents
UPDATE jobs SET has_children = 1 WHERE id IN (SELECT value FROM json_each(:ids));

-- name: lock_blocked_children
-- The BLOCKED children of some jobs, one row per edge, with its condition.
SELECT jobs.*, job_edges.parent_id, job_edges.condition AS edge_condition
FROM job_edges JOIN jobs ON jobs.id = job_edges.child_id
WHERE job_edges.parent_id IN (SELECT value FROM json_each(:ids)) AND jobs.state = 'BLOCKED'
ORDER BY jobs.id;

-- name: lock_blocked_downstream
-- Every BLOCKED job downstream of some jobs through BLOCKED jobs, in one
-- read however deep the graph: one row per edge that comes from those jobs
-- or from another of these, with its condition.
WITH RECURSIVE down(id) AS (
    SELECT job_edges.child_id FROM job_edges JOIN jobs ON jobs.id = job_edges.child_id
    WHERE job_edges.parent_id IN (SELECT value FROM json_each(:ids)) AND jobs.state = 'BLOCKED'
    UNION
    SELECT job_edges.child_id FROM down
    JOIN job_edges ON job_edges.parent_id = down.id
    JOIN jobs ON jobs.id = job_edges.child_id
    WHERE jobs.state = 'BLOCKED'
)
SELECT jobs.*, job_edges.parent_id, job_edges.condition AS edge_condition
FROM down JOIN jobs ON jobs.id = down.id JOIN job_edges ON job_edges.child_id = jobs.id
WHERE job_edges.parent_id IN (SELECT value FROM json_each(:ids))
   OR job_edges.parent_id IN (SELECT id FROM down)
ORDER BY jobs.id;

-- name: set_waiting_on
UPDATE jobs SET waiting_on = :waiting_on WHERE id = :id;

-- name: parent_outcomes
-- How parents ended and the size of their outputs in bytes (UTF-8), without
-- the outputs: those that fit in a lease are read apart (parent_outputs).
SELECT id, state, length(CAST(output_json AS BLOB)) AS output_bytes
FROM jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: parent_outputs
SELECT id, output_json FROM jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: children_of
SELECT child_id AS id FROM job_edges WHERE parent_id = :id ORDER BY child_id LIMIT :limit;

-- name: reruns_of
-- `rerun_of != ''` lets the planner use the partial index jobs_reruns (it
-- cannot tell that a bound :id is never ''): without it, ORDER BY id walked
-- every job in id order, 650 ms per Get with a million jobs stored.
SELECT id FROM jobs WHERE rerun_of = :id AND rerun_of != '' ORDER BY id LIMIT :limit;

-- name: delete_edges_of
DELETE FROM job_edges WHERE parent_id IN (SELECT value FROM json_each(:ids))
    OR child_id IN (SELECT value FROM json_each(:ids));

-- name: lock_due
-- Delayed jobs whose time came, the earliest first.
SELECT * FROM jobs WHERE state = 'SCHEDULED' AND next_run_time <= :now
ORDER BY next_run_time LIMIT :limit;

-- name: next_due_time
SELECT min(next_run_time) AS next_run_time FROM jobs WHERE state = 'SCHEDULED';

-- Templates (store/templates.py).

-- name: insert_template
INSERT INTO templates (org_id, name, version, job_spec, parameters, description, create_time)
VALUES (:org_id, :name, :version, :job_spec, :parameters, :description, :create_time)
ON CONFLICT DO NOTHING;

-- name: latest_template
SELECT * FROM templates WHERE org_id = :org_id AND name = :name ORDER BY version DESC LIMIT 1;

-- name: select_template
SELECT * FROM templates WHERE org_id = :org_id AND name = :name AND version = :version;

-- name: list_templates
-- The latest version of each template after a name, by name.
SELECT t.* FROM templates AS t
WHERE t.org_id = :org_id AND t.name > :after
    AND t.version = (SELECT max(version) FROM templates
                     WHERE org_id = t.org_id AND name = t.name)
ORDER BY t.name LIMIT :limit;

-- name: delete_template
DELETE FROM templates WHERE org_id = :org_id AND name = :name;

-- Schedules (store/schedules.py).

-- name: insert_schedule
INSERT INTO schedules (
    org_id, id, cron, time_zone, interval_us, job_spec, template_name,
    template_version, template_parameters, overlap, catch_up, paused, next_fire_time,
    last_fire_time, last_job_id, create_time, update_time
) VALUES (
    :org_id, :id, :cron, :time_zone, :interval_us, :job_spec, :template_name,
    :template_version, :template_parameters, :overlap, :catch_up, :paused, :next_fire_time,
    :last_fire_time, :last_job_id, :create_time, :update_time
) ON CONFLICT DO NOTHING;

-- name: save_schedule
UPDATE schedules SET
    cron = :cron, time_zone = :time_zone, interval_us = :interval_us,
    job_spec = :job_spec, template_name = :template_name,
    template_version = :template_version, template_parameters = :template_parameters,
    overlap = :overlap, catch_up = :catch_up, paused = :paused, next_fire_time = :next_fire_time,
    last_fire_time = :last_fire_time, last_job_id = :last_job_id, create_time = :create_time,
    update_time = :update_time
WHERE org_id = :org_id AND id = :id;

-- name: select_schedule
SELECT * FROM schedules WHERE org_id = :org_id AND id = :id;

-- name: lock_schedule
SELECT * FROM schedules WHERE org_id = :org_id AND id = :id;

-- name: list_schedules
SELECT * FROM schedules WHERE org_id = :org_id AND id > :after ORDER BY id LIMIT :limit;

-- name: count_schedules
SELECT count(*) AS schedules FROM schedules WHERE org_id = :org_id;

-- name: delete_schedule
DELETE FROM schedules WHERE org_id = :org_id AND id = :id;

-- name: due_schedules
SELECT org_id, id, next_fire_time FROM schedules
WHERE next_fire_time <= :now ORDER BY next_fire_time LIMIT :limit;

-- name: next_fire_time
SELECT min(next_fire_time) AS next_fire_time FROM schedules;

-- name: select_org_usage
SELECT log_bytes, artifact_bytes FROM org_usage WHERE org_id = :org_id;

-- name: add_org_usage
-- One row per org a group moved (the group's sum), in the group's finish.
INSERT INTO org_usage (org_id, log_bytes, artifact_bytes)
VALUES (:org_id, :log_bytes, :artifact_bytes)
ON CONFLICT (org_id) DO UPDATE SET log_bytes = org_usage.log_bytes + excluded.log_bytes,
    artifact_bytes = org_usage.artifact_bytes + excluded.artifact_bytes;

-- name: usage_of_jobs
-- What deleting these jobs gives back to their orgs' storage usage.
SELECT org_id, sum(log_bytes) AS log_bytes,
    coalesce(sum((SELECT sum(size_bytes) FROM artifacts WHERE artifacts.job_id = jobs.id)), 0)
        AS artifact_bytes
FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)) GROUP BY org_id;

-- name: artifact_size
SELECT size_bytes FROM artifacts WHERE job_id = :job_id AND name = :name;

-- name: log_line
SELECT sequence, stream, attempt, time, text FROM logs
WHERE job_id = :job_id AND sequence = :sequence;

-- name: delete_replica_workers
DELETE FROM connected_workers WHERE replica_id = :replica_id;

-- name: insert_connected_worker
INSERT INTO connected_workers (
    replica_id, worker_id, address, org_ids, labels, slots, lease_job_ids, draining,
    connect_time, last_heard_time, refresh_time
) VALUES (
    :replica_id, :worker_id, :address, :org_ids, :labels, :slots, :lease_job_ids, :draining,
    :connect_time, :last_heard_time, :refresh_time
);

-- name: delete_expired_workers
DELETE FROM connected_workers WHERE refresh_time < :before;

-- name: connected_workers
SELECT * FROM connected_workers WHERE refresh_time >= :after ORDER BY worker_id, replica_id;
