"""Loading a backend's queries.sql: named queries, with shared fragments pasted in."""

from __future__ import annotations

from pathlib import Path

import pytest

from zbrain_server.store.queries import load_queries


def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, sql: str) -> str:
    """A package `name` whose queries.sql holds `sql`, importable for the test."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "queries.sql").write_text(sql)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_fragment_is_pasted_wherever_a_query_or_a_fragment_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = backend(
        tmp_path,
        monkeypatch,
        "pasting_backend",
        """
-- fragment: visible
-- Comments of a fragment are left out, as a query's are.
org_id = :org_id AND {live}

-- fragment: live
state != 'GONE'

-- name: count_visible
SELECT count(*) FROM jobs WHERE {visible} AND requires = '{}';
""",
    )

    queries = load_queries(package, numbered=True)

    assert list(queries) == ["count_visible"], "fragments are no queries of their own"
    assert queries["count_visible"].sql == (
        "SELECT count(*) FROM jobs WHERE org_id = $1 AND state != 'GONE' AND requires = '{}'"
    )
    assert queries["count_visible"].names == ("org_id",)


def test_naming_a_fragment_that_is_not_there_fails_the_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = backend(
        tmp_path,
        monkeypatch,
        "misspelt_backend",
        "-- name: broken\nSELECT * FROM jobs WHERE {runable};\n",
    )

    with pytest.raises(RuntimeError, match=r"\{runable\}, which is no fragment"):
        load_queries(package, numbered=False)
