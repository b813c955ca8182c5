"""Named queries and migrations, read from the `.sql` files beside each driver.

A backend keeps every statement it runs in its `queries.sql`, one block per
name (as procrastinate does):

    -- name: lock_job
    -- The job, locked for the rest of the transaction.
    SELECT * FROM jobs WHERE id = :id FOR UPDATE;

and its schema in `migrations/NNNN_what.sql`, applied in order. Parameters
are written `:name` in both dialects; the PostgreSQL driver numbers them.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.M)


def load_queries(package: str) -> dict[str, str]:
    """The named queries of `package`'s queries.sql, without comments."""
    text = (resources.files(package) / "queries.sql").read_text()
    names = list(_NAME.finditer(text))
    queries: dict[str, str] = {}
    for found, following in zip(names, [*names[1:], None], strict=True):
        body = text[found.end() : following.start() if following else len(text)]
        sql = "\n".join(
            line
            for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        queries[found.group(1)] = sql.rstrip(";")
    return queries


def load_migrations(package: str) -> list[str]:
    """The scripts of `package`'s migrations folder, in version order
    (`0001_...sql` is version 1); each must be numbered one past the last."""
    folder = resources.files(package) / "migrations"
    scripts = sorted(
        (entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")
    )
    for number, (name, _) in enumerate(scripts, start=1):
        if not name.startswith(f"{number:04d}_"):
            raise RuntimeError(f"migration {name} of {package} is out of sequence")
    return [script for _, script in scripts]
