"""The core: the job model, the lifecycle (the one state machine), events, ids,
tokens and access rules. Pure: no database, no wire."""
