-- Version 5. Never edit a released migration: add the next one.
-- Sandboxed jobs and resource limits (docs/sandbox.md): what one attempt may
-- use, as a JSON object of the limits set ('' for none), and whether the job
-- asks a sandboxed worker for the network.
ALTER TABLE jobs ADD COLUMN resources TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN network INTEGER NOT NULL DEFAULT 0;
