-- Version 10. Never edit a released migration: add the next one.
-- Storage used by each organisation (docs/limits.md, storage quotas): the
-- bytes of log text and of artifacts its stored jobs hold, moved once per
-- group commit by the sum of the group's appends and uploads, and down when
-- retention deletes jobs. Started from what is stored already.
CREATE TABLE org_usage (
    org_id          TEXT PRIMARY KEY,
    log_bytes       INTEGER NOT NULL DEFAULT 0,
    artifact_bytes  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO org_usage (org_id, log_bytes, artifact_bytes)
SELECT jobs.org_id, sum(jobs.log_bytes),
    coalesce(sum((SELECT sum(size_bytes) FROM artifacts WHERE artifacts.job_id = jobs.id)), 0)
FROM jobs GROUP BY jobs.org_id;
