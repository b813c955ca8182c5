"""The PostgreSQL that tests run against, and throwaway schemas in it.

Tests needing PostgreSQL call `postgres_url()`: where none can be reached it
skips them, except under CI (CI=true), where it fails them, so that CI never
passes by silently skipping. Each test works in a schema of its own
(`new_schema_url`), dropped afterwards (`drop_schema`).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachable: dict[str, str | None] = {}  # URL -> None if reachable, else why not


async def postgres_url() -> str:
    """The base URL of the test database (ZBRAIN_TEST_POSTGRES, else DEFAULT_URL).

    Skips the calling test when it cannot be reached, or fails it under CI.
    """
    url = os.environ.get("ZBRAIN_TEST_POSTGRES", DEFAULT_URL)
    if url not in _reachable:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _reachable[url] = f"{type(exc).__name__}: {exc}"
        else:
            await conn.close()
            _reachable[url] = None
    problem = _reachable[url]
    if problem is not None:
        reason = f"PostgreSQL not reachable at {_where(url)}: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (under CI, PostgreSQL tests must run, not skip)")
        pytest.skip(reason)
    return url


def new_schema_url(base_url: str) -> tuple[str, str]:
    """A store URL on a fresh, unique schema of the base database, and that schema."""
    schema = f"zbt_{uuid.uuid4().hex}"
    separator = "&" if urlsplit(base_url).query else "?"
    return f"{base_url}{separator}schema={schema}", schema


async def drop_schema(base_url: str, schema: str) -> None:
    """Drop a test schema with everything in it."""
    conn = await asyncpg.connect(base_url, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{parts.hostname or ''}{port}"))
