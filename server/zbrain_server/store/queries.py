"""Named queries and migrations, read from the `.sql` files beside each driver.

A backend keeps every statement it runs in its `queries.sql`, one block per
name (as procrastinate does):

    -- name: lock_job
    -- The job, locked for the rest of the transaction.
    SELECT * FROM jobs WHERE id = :id FOR UPDATE;

and its schema in `migrations/NNNN_what.sql`, applied in order. Parameters
are written `:name` in both dialects; the PostgreSQL driver numbers them.

SQL that several queries share is written once, as a fragment, and used by
name in braces: a `-- fragment: runnable_for_worker` block is pasted where
another block says `{runnable_for_worker}`, so that (say) every query that
picks jobs for a worker filters them alike.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

# A block's header: a query's name, or a fragment's.
_HEADER = re.compile(r"^--\s*(name|fragment):\s*([a-z_][a-z0-9_]*)\s*$", re.M)
# Where a block uses a fragment (never inside a literal: none is braced words).
_FRAGMENT_USE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A parameter `:name`, skipping string literals, comments and `::type` casts.
_PARAM = re.compile(r"'(?:[^']|'')*'|--[^\n]*|(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
# A list parameter as SQLite reads one: JSON text given to json_each.
_JSON_LIST = re.compile(r"json_each\(:([A-Za-z_][A-Za-z0-9_]*)\)")


class Query:
    """A query with its `:name` parameters made positional, as drivers bind
    fastest: `?` for each use (SQLite), or `$n` per distinct name (asyncpg).
    sqlite3 binds named parameters one dict lookup at a time, which made a
    1,000-job insert half again as slow as binding tuples."""

    def __init__(self, sql: str, *, numbered: bool) -> None:
        names: list[str] = []
        uses: list[str] = []

        def place(found: re.Match[str]) -> str:
            name = found.group(1)
            if name is None:  # a string literal or a comment: left as it is
                return found.group(0)
            if numbered:
                if name not in names:
                    names.append(name)
                return f"${names.index(name) + 1}"
            uses.append(name)
            return "?"

        self.lists = frozenset(_JSON_LIST.findall(sql))  # passed as JSON text
        self.sql = _PARAM.sub(place, sql)
        self.names = tuple(names if numbered else uses)
        self._get: Callable[[Mapping[str, Any]], Any] | None = (
            operator.itemgetter(*self.names) if self.names else None
        )
        self._single = len(self.names) == 1

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters in placeholder order."""
        if self._get is None:
            return ()
        values = self._get(params)
        return (values,) if self._single else values

    def column_args(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Each parameter as the list of the rows' values, for a statement over unnest."""
        return [[row[name] for row in rows] for name in self.names]


def load_queries(package: str, *, numbered: bool) -> dict[str, Query]:
    """The named queries of `package`'s queries.sql, without comments, with
    their fragments pasted in, their parameters placed as the driver binds
    them (see `Query`)."""
    text = (resources.files(package) / "queries.sql").read_text()
    headers = list(_HEADER.finditer(text))
    blocks: dict[str, dict[str, str]] = {"name": {}, "fragment": {}}
    for found, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[found.end() : following.start() if following else len(text)]
        sql = "\n".join(
            line
            for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        blocks[found.group(1)][found.group(2)] = sql.rstrip(";")
    fragments = blocks["fragment"]
    return {
        name: Query(_pasted(sql, fragments, package), numbered=numbered)
        for name, sql in blocks["name"].items()
    }


def _pasted(
    sql: str, fragments: Mapping[str, str], package: str, within: tuple[str, ...] = ()
) -> str:
    """`sql` with each fragment it uses (and those they use) pasted in."""

    def paste(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in fragments:
            raise RuntimeError(f"{package}: a query uses {{{name}}}, which is no fragment")
        if name in within:
            raise RuntimeError(f"{package}: fragment {name} uses itself")
        return _pasted(fragments[name], fragments, package, (*within, name))

    return _FRAGMENT_USE.sub(paste, sql)


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
