-- Version 6. Never edit a released migration: add the next one.
-- Every ended attempt of a job, oldest first, as a JSON array of objects
-- (number, worker_id, lease_epoch, start_time, end_time, cause, end_state,
-- error), appended when an attempt ends. Jobs stored before this version
-- read as having no recorded attempts.
ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
