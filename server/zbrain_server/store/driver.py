"""The small interface a database backend implements.

A driver supplies connections, transactions and named queries; everything
else of the store (what a write does, group commit) is written once above
it, in `store.jobs` and `store.engine`. A driver also owns the few things
where the databases truly differ: how a group is made atomic and durable,
how a quota's count is held steady while it is checked, how events are
numbered in commit order, and how committed events reach the listener.

Drivers raise only `zbrain.errors` classes: `StoreError`, with
`StoreConflictError` for a conflict worth running again and `StoreFullError`
for a full disk, chained to the driver's own error.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TypeVar

from ..core.model import EventRecord
from .engine import Group
from .ops import Params, Program, Row

T = TypeVar("T")

EventListener = Callable[[list[EventRecord]], None]
"""Called with each transaction's events, numbered, after it commits, in sequence order."""


class Driver(abc.ABC):
    """One database backend."""

    max_group: int
    """Writes committed together at most."""

    close_timeout_s: float | None = None
    """How long closing waits for queued writes (None: as long as they take)."""

    skips_locked_rows: bool = False
    """Whether leasing skips rows another transaction holds (FOR UPDATE SKIP
    LOCKED): a lease that got fewer jobs than it asked for then counts what
    it could see, to try again soon if some were only held (`runnable_of_org`)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the database lives, for people to read (never with a password)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and run pending schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the database (the engine has written what was queued)."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise StoreError unless the database can be read and written."""

    # -- reads ---------------------------------------------------------------------

    @abc.abstractmethod
    async def fetch(self, query: str, params: Params) -> list[Row]:
        """Every row of a named query, outside any write transaction."""

    @abc.abstractmethod
    async def fetch_sql(self, sql: str, params: Params) -> list[Row]:
        """Every row of a query built at run time from this driver's fragments
        (`in_list`), for searches whose filters vary."""

    @abc.abstractmethod
    def in_list(self, column: str, param: str) -> str:
        """SQL saying that `column` is one of the list parameter `param`."""

    @abc.abstractmethod
    def map_value(self, column: str, key_param: str) -> str:
        """SQL for the value of a JSON-object column (labels) at the key that
        the parameter `key_param` holds (NULL when absent)."""

    async def fetch_one(self, query: str, params: Params) -> Row | None:
        """The first row of a named query, or None."""
        rows = await self.fetch(query, params)
        return rows[0] if rows else None

    # -- writes --------------------------------------------------------------------

    @abc.abstractmethod
    async def run_group(self, program: Program[T]) -> T:
        """Run a group's program in one transaction and commit it durably; roll
        it back and raise if the program raises."""

    @abc.abstractmethod
    def lock_orgs(self, org_ids: list[str]) -> Program[dict[str, int]]:
        """The committed waiting-job counts of these orgs (sorted), which no
        other writer may change until the group commits."""

    @abc.abstractmethod
    def finish(self, group: Group) -> Program[None]:
        """The group's last statements: move the waiting counts by
        `group.waiting` and the orgs' storage usage by `group.usage_moves()`,
        number and store `group.events` in commit order, and set
        `group.last_sequence`."""

    @abc.abstractmethod
    def committed(self, group: Group) -> None:
        """A group committed: hand its events on (or have them read back)."""

    @abc.abstractmethod
    def set_listener(self, listener: EventListener | None) -> None:
        """Receive every committed transaction's events, this store's and, for a
        shared database, every other replica's, in sequence order."""
