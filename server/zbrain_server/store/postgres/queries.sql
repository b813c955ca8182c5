-- Every statement the PostgreSQL store runs, by name (see store/queries.py).
-- Several replicas write at once, so writes that decide on a job lock its
-- row first (FOR UPDATE), and leasing and the reaper skip rows another
-- replica holds (SKIP LOCKED). Statements run for many rows at once
-- (ExecuteMany) take each parameter as an array and read it with unnest.
-- Parameters are written :name; a cast follows as ::type.

-- name: select_job
SELECT * FROM jobs WHERE id = :id;

-- name: lock_job
SELECT * FROM jobs WHERE id = :id FOR UPDATE;

-- name: lock_jobs
-- Several jobs, locked in id order, as every writer of several jobs takes them.
SELECT * FROM jobs WHERE id = ANY(:ids::text[]) ORDER BY id FOR UPDATE;

-- name: jobs_by_request_ids
-- The jobs holding these (org, request id) pairs, given as two lists.
SELECT * FROM jobs
WHERE (org_id, request_id) IN (SELECT * FROM unnest(:org_ids::text[], :request_ids::text[]));

-- name: artifacts_of
SELECT job_id, name, sha256, size_bytes FROM artifacts
WHERE job_id = ANY(:ids::text[]) ORDER BY job_id, name;

-- name: insert_job
-- A request id another job of the org holds already (maybe committed by
-- another replica a moment ago) is skipped: the caller counts what was inserted.
INSERT INTO jobs (
    id, org_id, cmd, input_json, env, timeout_us, max_retries, priority, labels,
    create_time, state, attempt, update_time, start_time, finish_time, next_run_time,
    last_error, output_json, lease_epoch, worker_id, lease_expire_time, cancel_requested,
    request_id, trace_context, previous_state, cause, reason, transition_time,
    concurrency_key, concurrency_limit, requires, resources, network
)
SELECT * FROM unnest(
    :id::text[], :org_id::text[], :cmd::text[], :input_json::text[], :env::text[],
    :timeout_us::bigint[], :max_retries::int[], :priority::int[], :labels::text[],
    :create_time::bigint[], :state::text[], :attempt::int[], :update_time::bigint[],
    :start_time::bigint[], :finish_time::bigint[], :next_run_time::bigint[],
    :last_error::text[], :output_json::text[], :lease_epoch::bigint[], :worker_id::text[],
    :lease_expire_time::bigint[], :cancel_requested::int[], :request_id::text[],
    :trace_context::text[], :previous_state::text[], :cause::text[], :reason::text[],
    :transition_time::bigint[], :concurrency_key::text[], :concurrency_limit::int[],
    :requires::text[], :resources::text[], :network::int[]
)
ON CONFLICT (org_id, request_id) WHERE request_id != '' DO NOTHING;

-- name: save_job
-- Compare-and-set of many jobs at once: each row is written only if nobody
-- changed it since it was read.
UPDATE jobs SET
    state = v.state, attempt = v.attempt, update_time = v.update_time,
    start_time = v.start_time, finish_time = v.finish_time, next_run_time = v.next_run_time,
    last_error = v.last_error, output_json = v.output_json, lease_epoch = v.lease_epoch,
    worker_id = v.worker_id, worker_incarnation = v.worker_incarnation,
    lease_expire_time = v.lease_expire_time, cancel_requested = v.cancel_requested,
    previous_state = v.previous_state, cause = v.cause, reason = v.reason,
    transition_time = v.transition_time, attempts = v.attempts
FROM unnest(
    :state::text[], :attempt::int[], :update_time::bigint[], :start_time::bigint[],
    :finish_time::bigint[], :next_run_time::bigint[], :last_error::text[], :output_json::text[],
    :lease_epoch::bigint[], :worker_id::text[], :worker_incarnation::text[],
    :lease_expire_time::bigint[], :cancel_requested::int[], :previous_state::text[],
    :cause::text[], :reason::text[], :transition_time::bigint[], :attempts::text[],
    :id::text[], :old_state::text[], :old_lease_epoch::bigint[]
) AS v(
    state, attempt, update_time, start_time, finish_time, next_run_time, last_error,
    output_json, lease_epoch, worker_id, worker_incarnation, lease_expire_time,
    cancel_requested, previous_state, cause, reason, transition_time, attempts, id,
    old_state, old_lease_epoch
)
WHERE jobs.id = v.id AND jobs.state = v.old_state AND jobs.lease_epoch = v.old_lease_epoch;

-- fragment: runnable_for_worker
-- A job of :org_id that may run now (:now) on the worker: the worker's labels
-- (:worker_labels, a JSON object) meet what it requires, and it matches none
-- of the org's paused label selectors (:paused_selectors, a JSON array of
-- objects). The queries that pick jobs for a worker all filter with it, so
-- that the head of a key (key_head) is the job leasing would take.
org_id = :org_id AND state IN ('PENDING', 'RETRYING') AND next_run_time <= :now
    AND (requires = '{}' OR NOT EXISTS (
        SELECT 1 FROM jsonb_each_text(requires::jsonb) AS r
        WHERE NOT coalesce(
            jsonb_exists(:worker_labels::jsonb, r.key)
                AND (r.value = '' OR :worker_labels::jsonb ->> r.key = r.value),
            false)))
    AND (:paused_selectors::jsonb = '[]'::jsonb OR NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(:paused_selectors::jsonb) AS s(selector)
        WHERE labels::jsonb @> s.selector))

-- name: lock_runnable
-- Up to :limit jobs of one org that may run now on the worker, in leasing
-- order, and not of a skipped concurrency key. Rows another replica is
-- leasing are skipped, not waited for.
SELECT * FROM jobs
WHERE {runnable_for_worker} AND NOT (concurrency_key = ANY(:skipped_keys::text[]))
ORDER BY priority DESC, id LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: count_runnable
-- How many jobs lock_runnable would take if no other transaction held any
-- (a plain read waits for no row lock). More than it took: it skipped rows
-- held by a transaction that may change nothing of them (one storing a
-- child of a job, another replica's lease that locked more than it chose)
-- and emits no event to wake anyone, so leasing looks again soon.
SELECT count(*) AS runnable FROM (
    SELECT 1 FROM jobs
    WHERE {runnable_for_worker} AND NOT (concurrency_key = ANY(:skipped_keys::text[]))
    LIMIT :limit
) AS visible;

-- name: lock_runnable_of_key
-- lock_runnable's jobs of one concurrency key only, in the key's order (for
-- the rotation among an org's keys: jobs_runnable_by_key).
SELECT * FROM jobs
WHERE {runnable_for_worker} AND concurrency_key != '' AND concurrency_key = :concurrency_key
ORDER BY priority DESC, id LIMIT :limit
FOR UPDATE SKIP LOCKED;

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
SELECT * FROM org_settings WHERE org_id = ANY(:org_ids::text[]);

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
-- Two admins changing one org's settings at once take turns, each reading
-- what the other stored.
SELECT * FROM org_settings WHERE org_id = :org_id FOR UPDATE;

-- name: try_lock_limit
-- The lock a lease transaction holds while it counts an org's (or a key's)
-- running jobs and leases within its limit, so no other replica counts the
-- same jobs before this one commits. It never waits: a replica finding it
-- held skips that org or key for this pass and tries again soon (waiting
-- could deadlock with a submitting group holding the org's waiting row).
-- Advisory locks are the database's, not the schema's: the name is
-- qualified with this installation's schema (the search_path, which exists
-- once the store is open), so that installations sharing a database never
-- hold back each other's orgs of the same name.
SELECT pg_try_advisory_xact_lock(hashtextextended(current_schema() || ':' || :name, 0)) AS locked;

-- name: count_running
SELECT count(*) AS running FROM jobs WHERE org_id = :org_id AND state = 'RUNNING';

-- name: key_head
-- The first job of a concurrency key that the worker could lease now, in
-- leasing order, locked by another replica or not: a replica that read past
-- it (SKIP LOCKED) must not lease the next one.
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
-- SKIP LOCKED: a job another replica's reaper is failing right now is its
-- business; once that commits, the job no longer matches anyway.
SELECT * FROM jobs WHERE state = 'RUNNING' AND lease_expire_time < :now
FOR UPDATE SKIP LOCKED;

-- name: lock_overdue
SELECT * FROM jobs WHERE state = 'RUNNING' AND start_time + timeout_us + :grace < :now
FOR UPDATE SKIP LOCKED;

-- name: leases_of
SELECT id, lease_epoch, worker_incarnation FROM jobs
WHERE state = 'RUNNING' AND worker_id = :worker_id;

-- name: next_run_time
SELECT min(next_run_time) AS next_run_time FROM jobs
WHERE org_id = ANY(:org_ids::text[]) AND state IN ('PENDING', 'RETRYING');

-- name: lock_job_for_logs
-- The row lock makes the job's line numbers gapless across replicas.
SELECT * FROM jobs WHERE id = :id FOR UPDATE;

-- name: insert_log
INSERT INTO logs (job_id, sequence, stream, attempt, time, text)
SELECT * FROM unnest(
    :job_id::text[], :sequence::bigint[], :stream::text[], :attempt::int[], :time::bigint[],
    :text::bytea[]
);

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
            SELECT sequence, octet_length(text) + :overhead AS size FROM logs
            WHERE job_id = :job_id AND sequence > :after ORDER BY sequence LIMIT :limit
        ) AS candidates
    ) AS sized WHERE through_bytes <= :max_bytes OR position = 1
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
-- SKIP LOCKED: replicas purging at once split the work instead of waiting.
SELECT id FROM jobs AS finished
WHERE finish_time < :before AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')
  AND NOT (org_id = ANY(:own_orgs::text[]))
  AND {without_unfinished_children}
LIMIT :limit
FOR UPDATE OF finished SKIP LOCKED;

-- name: purgeable_of_org
-- As purgeable, for one org with retention days of its own.
SELECT id FROM jobs AS finished
WHERE org_id = :org_id AND finish_time < :before
  AND state IN ('SUCCEEDED', 'FAILED', 'CANCELED')
  AND {without_unfinished_children}
LIMIT :limit
FOR UPDATE OF finished SKIP LOCKED;

-- name: all_org_settings
SELECT * FROM org_settings;

-- name: delete_logs_of
DELETE FROM logs WHERE job_id = ANY(:ids::text[]);

-- name: delete_artifacts_of
DELETE FROM artifacts WHERE job_id = ANY(:ids::text[]);

-- name: delete_jobs
DELETE FROM jobs WHERE id = ANY(:ids::text[]);

-- name: referenced_blobs
SELECT DISTINCT sha256 FROM artifacts;

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

-- name: lock_orgs
-- The orgs' waiting rows, locked until the group commits, with their
-- committed counts. A group takes them before its first submission, so that
-- its quota checks count what no other replica can change before this group
-- commits. An upsert rather than SELECT ... FOR UPDATE, which locks nothing
-- for an org without a row yet (two replicas would both count it as empty);
-- sorted as in finish_group, which then finds them held already.
INSERT INTO org_waiting (org_id, waiting) SELECT unnest(:org_ids::text[]), 0
ON CONFLICT (org_id) DO UPDATE SET waiting = org_waiting.waiting
RETURNING org_id, waiting;

-- name: finish_group
-- The last statement of every group that changes the queue or records
-- events. It moves the orgs' waiting counts, then numbers the events from
-- the counter row, stores them, and NOTIFYs :channel with the last sequence,
-- which PostgreSQL delivers only on commit. It answers that sequence (NULL
-- without events).
--
-- The counter row is locked only here, last, so it is held only until the
-- COMMIT that follows at once; that lock lasting until COMMIT is what keeps
-- sequence order equal to commit order across replicas. Org rows are locked
-- here or by lock_orgs, always sorted and before the counter, so no two
-- groups can deadlock over them. The orgs' storage usage rows (org_usage,
-- the sums of the group's log and artifact bytes) are locked only here,
-- after the waiting rows and before the counter. (PostgreSQL runs the parts
-- of a WITH in no set order: `usage` reads `waiting` and `counter` reads
-- `usage` to be sure of that order.)
WITH waiting AS (
    INSERT INTO org_waiting (org_id, waiting)
    SELECT * FROM unnest(:moved_orgs::text[], :moved_by::bigint[])
    ON CONFLICT (org_id) DO UPDATE SET waiting = org_waiting.waiting + excluded.waiting
    RETURNING 1
), usage AS (
    INSERT INTO org_usage (org_id, log_bytes, artifact_bytes)
    SELECT u.org_id, u.log_bytes, u.artifact_bytes
    FROM unnest(:usage_orgs::text[], :usage_logs::bigint[], :usage_artifacts::bigint[])
        AS u(org_id, log_bytes, artifact_bytes)
    WHERE (SELECT count(*) FROM waiting) >= 0
    ON CONFLICT (org_id) DO UPDATE SET log_bytes = org_usage.log_bytes + excluded.log_bytes,
        artifact_bytes = org_usage.artifact_bytes + excluded.artifact_bytes
    RETURNING 1
), counter AS (
    UPDATE meta SET value = value + cardinality(:topic::text[])
    WHERE key = 'last_sequence' AND cardinality(:topic::text[]) > 0
        AND (SELECT count(*) FROM usage) >= 0
    RETURNING value
), stored AS (
    INSERT INTO events (sequence, topic, org_id, job_id, time, payload, last_of_commit)
    SELECT counter.value - cardinality(:topic::text[]) + e.position, e.topic, e.org_id,
        e.job_id, e.time, e.payload, e.position = cardinality(:topic::text[])
    FROM counter, unnest(
        :topic::text[], :org_id::text[], :job_id::text[], :time::bigint[], :payload::bytea[]
    ) WITH ORDINALITY AS e(topic, org_id, job_id, time, payload, position)
)
SELECT (SELECT value FROM counter) AS last_sequence,
    (SELECT pg_notify(:channel, value::text) FROM counter) AS notified;

-- fragment: page_of_events
-- A page of a replay of the events the query's `visible` (the events table,
-- or some of its rows) holds: those after :after under the topic :prefix, at
-- most :limit events and :max_bytes bytes (but at least one event), sizes
-- counted as core.model.event_size counts them, so a reader that stops
-- reading holds about one streamed message. The sizes are summed before any
-- payload is read (octet_length of a stored value reads its header only;
-- `visible` is not materialized, so this reads the table itself).
SELECT sequence, topic, org_id, job_id, time, payload FROM events
WHERE sequence IN (
    SELECT sequence FROM (
        SELECT sequence, sum(size) OVER (ORDER BY sequence) AS through_bytes,
            row_number() OVER (ORDER BY sequence) AS position
        FROM (
            SELECT sequence, octet_length(payload) + octet_length(topic) + :overhead AS size
            FROM visible WHERE sequence > :after AND starts_with(topic, :prefix)
            ORDER BY sequence LIMIT :limit
        ) AS candidates
    ) AS sized WHERE through_bytes <= :max_bytes OR position = 1
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

-- name: undelivered_events
-- What the delivery task hands the replica's listener: every event after the
-- last it delivered, each commit's last one marked.
SELECT sequence, topic, org_id, job_id, time, payload, last_of_commit FROM events
WHERE sequence > :after ORDER BY sequence LIMIT :limit;

-- name: last_sequence
SELECT value AS sequence FROM meta WHERE key = 'last_sequence';

-- name: events_through
-- The last event recorded before a time.
SELECT max(sequence) AS sequence FROM events WHERE time < :before;

-- name: delete_events_through
DELETE FROM events WHERE sequence <= :through;

-- name: purged_through
SELECT value FROM meta WHERE key = 'events_purged_through';

-- name: raise_purged_mark
-- Idempotent, so replicas may purge at once: the mark only ever rises.
UPDATE meta SET value = greatest(value, :through) WHERE key = 'events_purged_through';

-- name: insert_token
INSERT INTO tokens (id, org_id, role, description, secret_hash, create_time, revoke_time)
VALUES (:id, :org_id, :role, :description, :secret_hash, :create_time, :revoke_time);

-- name: select_token
SELECT * FROM tokens WHERE id = :id;

-- name: list_tokens
SELECT * FROM tokens WHERE :org_id::text IS NULL OR org_id = :org_id ORDER BY create_time, id;

-- name: revoke_token
UPDATE tokens SET revoke_time = :now WHERE id = :id AND revoke_time IS NULL;

-- name: any_token
SELECT 1 AS found FROM tokens WHERE revoke_time IS NULL LIMIT 1;

-- name: can_write
SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS writable;

-- Workflows: dependencies (store/graph.py), delayed jobs, reruns.

-- name: set_links
UPDATE jobs SET depends_on = v.depends_on, waiting_on = v.waiting_on,
    has_children = v.has_children, depth = v.depth, rerun_of = v.rerun_of
FROM unnest(
    :id::text[], :depends_on::text[], :waiting_on::int[], :has_children::int[], :depth::int[],
    :rerun_of::text[]
) AS v(id, depends_on, waiting_on, has_children, depth, rerun_of)
WHERE jobs.id = v.id;

-- name: insert_edge
INSERT INTO job_edges (parent_id, child_id, condition)
SELECT * FROM unnest(:parent_id::text[], :child_id::text[], :condition::text[]);

-- name: mark_parents
UPDATE jobs SET has_children = 1 WHERE id = ANY(:ids::text[]);

-- name: lock_blocked_children
-- The BLOCKED children of some jobs, one row per edge, with its condition;
-- locked in id order, so replicas settling two parents of one child take
-- turns (and then read the count the other left).
SELECT jobs.*, job_edges.parent_id, job_edges.condition AS edge_condition
FROM job_edges JOIN jobs ON jobs.id = job_edges.child_id
WHERE job_edges.parent_id = ANY(:ids::text[]) AND jobs.state = 'BLOCKED'
ORDER BY jobs.id
FOR UPDATE OF jobs;

-- name: lock_blocked_downstream
-- Every BLOCKED job downstream of some jobs through BLOCKED jobs, in one
-- read however deep the graph: one row per edge that comes from those jobs
-- or from another of these, with its condition; locked in id order (and
-- checked BLOCKED again once locked).
WITH RECURSIVE down(id) AS (
    SELECT job_edges.child_id FROM job_edges JOIN jobs ON jobs.id = job_edges.child_id
    WHERE job_edges.parent_id = ANY(:ids::text[]) AND jobs.state = 'BLOCKED'
    UNION
    -- Each step looks its children up in the edges' index. (The LIMIT, never
    -- reached, keeps the planner from joining a whole scan of the edges by
    -- hash at every step: it misjudges the work table as larger than the
    -- one row a chain has, and a deep chain then costs its length squared.)
    SELECT step.child_id FROM down
    CROSS JOIN LATERAL (
        SELECT job_edges.child_id FROM job_edges
        WHERE job_edges.parent_id = down.id LIMIT 1000000000
    ) AS step
    JOIN jobs ON jobs.id = step.child_id
    WHERE jobs.state = 'BLOCKED'
)
SELECT jobs.*, job_edges.parent_id, job_edges.condition AS edge_condition
FROM jobs JOIN job_edges ON job_edges.child_id = jobs.id
WHERE jobs.id IN (SELECT id FROM down) AND jobs.state = 'BLOCKED'
  AND (job_edges.parent_id = ANY(:ids::text[]) OR job_edges.parent_id IN (SELECT id FROM down))
ORDER BY jobs.id
FOR UPDATE OF jobs;

-- name: set_waiting_on
UPDATE jobs SET waiting_on = v.waiting_on
FROM unnest(:id::text[], :waiting_on::int[]) AS v(id, waiting_on)
WHERE jobs.id = v.id;

-- name: parent_outcomes
-- How parents ended and the size of their outputs in bytes (UTF-8), without
-- the outputs: those that fit in a lease are read apart (parent_outputs).
SELECT id, state, octet_length(output_json) AS output_bytes FROM jobs WHERE id = ANY(:ids::text[]);

-- name: parent_outputs
SELECT id, output_json FROM jobs WHERE id = ANY(:ids::text[]);

-- name: children_of
SELECT child_id AS id FROM job_edges WHERE parent_id = :id ORDER BY child_id LIMIT :limit;

-- name: reruns_of
-- `rerun_of != ''` lets the planner use the partial index jobs_reruns (it
-- cannot tell that a bound :id is never ''): without it, ORDER BY id walked
-- every job in id order, 650 ms per Get with a million jobs stored.
SELECT id FROM jobs WHERE rerun_of = :id AND rerun_of != '' ORDER BY id LIMIT :limit;

-- name: delete_edges_of
DELETE FROM job_edges WHERE parent_id = ANY(:ids::text[]) OR child_id = ANY(:ids::text[]);

-- name: lock_due
-- Delayed jobs whose time came, the earliest first; replicas promoting at
-- once split them.
SELECT * FROM jobs WHERE state = 'SCHEDULED' AND next_run_time <= :now
ORDER BY next_run_time LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: next_due_time
SELECT min(next_run_time) AS next_run_time FROM jobs WHERE state = 'SCHEDULED';

-- Templates (store/templates.py).

-- name: insert_template
-- A version another replica stored a moment ago is skipped: the caller
-- counts what was inserted, and tries again as the next version.
INSERT INTO templates (org_id, name, version, job_spec, parameters, description, create_time)
VALUES (:org_id, :name, :version, :job_spec, :parameters, :description, :create_time)
ON CONFLICT DO NOTHING;

-- name: latest_template
SELECT * FROM templates WHERE org_id = :org_id AND name = :name ORDER BY version DESC LIMIT 1;

-- name: select_template
SELECT * FROM templates WHERE org_id = :org_id AND name = :name AND version = :version;

-- name: list_templates
-- The latest version of each template after a name, by name.
SELECT DISTINCT ON (name) * FROM templates
WHERE org_id = :org_id AND name > :after
ORDER BY name, version DESC LIMIT :limit;

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
-- The row lock makes a tick fire once: a replica that waited on it reads
-- the next tick the other one stored.
SELECT * FROM schedules WHERE org_id = :org_id AND id = :id FOR UPDATE;

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

-- name: usage_of_jobs
-- What deleting these jobs gives back to their orgs' storage usage.
SELECT org_id, sum(log_bytes) AS log_bytes,
    coalesce(sum((SELECT sum(size_bytes) FROM artifacts WHERE artifacts.job_id = jobs.id)), 0)
        AS artifact_bytes
FROM jobs WHERE id = ANY(:ids::text[]) GROUP BY org_id;

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
)
SELECT * FROM unnest(
    :replica_id::text[], :worker_id::text[], :address::text[], :org_ids::text[],
    :labels::text[], :slots::int[], :lease_job_ids::text[], :draining::boolean[],
    :connect_time::bigint[], :last_heard_time::bigint[], :refresh_time::bigint[]
);

-- name: delete_expired_workers
DELETE FROM connected_workers WHERE refresh_time < :before;

-- name: connected_workers
SELECT * FROM connected_workers WHERE refresh_time >= :after ORDER BY worker_id, replica_id;
