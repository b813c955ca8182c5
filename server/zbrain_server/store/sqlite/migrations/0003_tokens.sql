-- Version 3. Never edit a released migration: add the next one.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    description TEXT NOT NULL,
    secret_hash TEXT NOT NULL,  -- SHA-256 of the secret; the secret is never stored
    create_time INTEGER NOT NULL,
    revoke_time INTEGER
);
