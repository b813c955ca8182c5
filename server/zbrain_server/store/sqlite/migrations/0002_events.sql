-- Version 2. Never edit a released migration: add the next one.
CREATE TABLE events (
    sequence INTEGER PRIMARY KEY,  -- assigned by the single writer, in commit order
    topic    TEXT NOT NULL,
    org_id   TEXT NOT NULL,
    job_id   TEXT NOT NULL,
    time     INTEGER NOT NULL,
    payload  BLOB NOT NULL         -- a serialized zbrain.v1.Event with its payload only
);
CREATE INDEX events_by_org ON events (org_id, sequence);
CREATE INDEX events_by_time ON events (time);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
