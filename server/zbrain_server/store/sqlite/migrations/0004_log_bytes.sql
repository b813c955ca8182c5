-- Version 4. Never edit a released migration: add the next one.
ALTER TABLE jobs ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
