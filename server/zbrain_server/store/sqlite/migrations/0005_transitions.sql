-- Version 5. Never edit a released migration: add the next one.
-- A job's last transition: the state before, its typed cause, its words and
-- time. Jobs stored before this version read as cause UNSPECIFIED at their
-- update time.
ALTER TABLE jobs ADD COLUMN previous_state TEXT;
ALTER TABLE jobs ADD COLUMN cause TEXT NOT NULL DEFAULT 'UNSPECIFIED';
ALTER TABLE jobs ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN transition_time INTEGER;
