"""Facts of the wire protocol that the server and the worker SDK must agree on."""

from __future__ import annotations

BATCH_BYTES = 1 << 20
"""A LeaseBatch (server to worker) or WorkerResults (worker to server) holds
entries up to about this size; a bigger entry travels alone. Far below any
peer's message limit, and past where batching pays."""

TRUNCATION_MARK = " …[line truncated]"
"""Appended to a log line cut at the line length limit, by the worker that
cut it or by the server."""
