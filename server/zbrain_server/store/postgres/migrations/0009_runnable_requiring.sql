-- Runnable jobs that require worker labels, for the count of jobs no
-- connected worker can take (read every few seconds): most jobs require none,
-- so this index stays small however deep the queue, where a scan of every
-- runnable job's requirements took the better part of a second at a million.
CREATE INDEX jobs_runnable_requiring ON jobs (org_id, requires)
    WHERE state IN ('PENDING', 'RETRYING') AND requires != '{}';
