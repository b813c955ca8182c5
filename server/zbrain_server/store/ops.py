"""What a store program asks its database to do, one statement at a time.

Every write of the store is a *program*: a generator that yields these
operations and receives each one's answer, written once above the backends
(`store.jobs`). A backend's driver runs the program: SQLite in its writer
thread, synchronously, many programs in one hop to that thread; PostgreSQL
on the event loop, awaiting each statement. So the logic a state change
follows (read, decide through the lifecycle, compare-and-set, record the
event) exists once, while each backend keeps only its SQL and its driver
calls (the "sans-I/O" shape of h11 and similar protocol libraries).

    def cancel(job_id: str) -> Program[Job]:
        row = yield FetchOne("lock_job", {"id": job_id})
        ...
        yield from tx.save([change])
        return change.after

A failing statement is thrown into the program as a `StoreError`
(`StoreConflictError` when running it again may succeed), at the `yield`
that ran it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

Row = Mapping[str, Any]
"""A result row, read by column name."""

Params = Mapping[str, Any]
"""Named parameters of a query (`:name` in its SQL). A list or tuple value is a
list parameter (an array in PostgreSQL, JSON text for SQLite's json_each)."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """Run a named query; answered with every row."""

    query: str
    params: Params


@dataclass(frozen=True, slots=True)
class FetchOne:
    """Run a named query; answered with its first row, or None."""

    query: str
    params: Params


@dataclass(frozen=True, slots=True)
class Execute:
    """Run a named statement; answered with the number of rows it changed."""

    query: str
    params: Params


@dataclass(frozen=True, slots=True)
class ExecuteMany:
    """Run a named statement for each row of parameters, as one operation:
    SQLite executes it per row; PostgreSQL passes each parameter as an array
    of the rows' values to a statement written over `unnest`. Answered with
    the number of rows changed in all."""

    query: str
    rows: Sequence[Params]


@dataclass(frozen=True, slots=True)
class Savepoint:
    """Begin the savepoint of the next write of a group, ending (releasing) the
    previous write's if `release` is set."""

    release: bool = False


@dataclass(frozen=True, slots=True)
class RollbackToSavepoint:
    """Undo the current write of a group, back to its savepoint."""


Op = Fetch | FetchOne | Execute | ExecuteMany | Savepoint | RollbackToSavepoint

Program = Generator[Op, Any, T]
"""A piece of store work: yields operations, returns its result."""


def answer(value: T) -> Program[T]:
    """A program that answers `value` at once, running no statement (for a
    backend that knows the answer without asking its database)."""
    return value
    yield  # unreachable: makes this a generator


def run(program: Program[T], execute: Callable[[Op], Any]) -> T:
    """Run a program to its end, each operation by `execute` (synchronously);
    an exception `execute` raises is thrown into the program where it yielded."""
    value: Any = None
    failure: Exception | None = None
    while True:
        try:
            op = program.send(value) if failure is None else program.throw(failure)
        except StopIteration as finished:
            result: T = finished.value
            return result
        try:
            value, failure = execute(op), None
        except Exception as error:
            value, failure = None, error


async def run_async(program: Program[T], execute: Callable[[Op], Awaitable[Any]]) -> T:
    """`run`, awaiting each operation."""
    value: Any = None
    failure: Exception | None = None
    while True:
        try:
            op = program.send(value) if failure is None else program.throw(failure)
        except StopIteration as finished:
            result: T = finished.value
            return result
        try:
            value, failure = await execute(op), None
        except Exception as error:
            value, failure = None, error
