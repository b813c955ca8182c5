"""`SyncClient`: the methods of `zbrain.Client` without `await`, for scripts and REPLs.

It runs a `Client` on a private event loop in a background thread, so the two
never disagree about behaviour; each method is typed as the async one is.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from .client import _KEEP, Client, DependencyLike
from .connection import TlsFiles
from .models import (
    Artifact,
    CancelOutcome,
    Event,
    Job,
    JobState,
    LogLine,
    Resources,
    WorkerInfo,
)
from .orgs import Orgs
from .v1 import job_pb2
from .workflows import Schedules, Templates

T = TypeVar("T")
A = TypeVar("A")
P = ParamSpec("P")


class SyncClient:
    """A blocking client: `with SyncClient.connect("127.0.0.1:50051") as client: ...`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="zbrain-client", daemon=True
        )
        self._thread.start()
        try:
            self._client: Client = self._run(
                Client.connect(target, token=token, tls=tls, timeout=timeout, options=options)
            )
        except BaseException:
            self._stop_loop()
            raise
        self.templates = SyncTemplates(self._run, self._client.templates)
        """See `Client.templates`."""
        self.schedules = SyncSchedules(self._run, self._client.schedules)
        """See `Client.schedules`."""
        self.orgs = SyncOrgs(self._run, self._client.orgs)
        """See `Client.orgs`."""

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> SyncClient:
        """As `Client.connect`: a client for `target` (default ZBRAIN_SERVER or
        127.0.0.1:50051); close it, or use it in a `with` block."""
        return cls(target, token=token, tls=tls, timeout=timeout, options=options)

    @property
    def target(self) -> str:
        return self._client.target

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """The async iterator's items; leaving early (break, an error) closes it,
        which ends its call on the server at once."""
        try:
            while True:
                try:
                    yield self._run(anext(iterator))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None and not self._loop.is_closed():
                self._run(close())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        self._run(self._client.close())
        self._stop_loop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        cmd: Sequence[str],
        *,
        org: str | None = None,
        input: Any = None,
        env: Mapping[str, str] | None = None,
        timeout: float | timedelta | None = None,
        max_retries: int | None = None,
        priority: int = 0,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        depends_on: Iterable[DependencyLike] = (),
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
        requires: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        network: bool = False,
    ) -> Job:
        """See `Client.submit`."""
        return self._run(
            self._client.submit(
                cmd,
                org=org,
                input=input,
                env=env,
                timeout=timeout,
                max_retries=max_retries,
                priority=priority,
                labels=labels,
                request_id=request_id,
                depends_on=depends_on,
                run_at=run_at,
                delay=delay,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit,
                requires=requires,
                resources=resources,
                network=network,
            )
        )

    def rerun(self, job_id: str, *, input: Any = _KEEP) -> Job:
        """See `Client.rerun`."""
        return self._run(self._client.rerun(job_id, input=input))

    def submit_batch(self, specs: Iterable[job_pb2.JobSpec]) -> builtins.list[str]:
        """See `Client.submit_batch`."""
        return self._run(self._client.submit_batch(specs))

    def get(self, job_id: str) -> Job:
        """See `Client.get`."""
        return self._run(self._client.get(job_id))

    def list(
        self,
        *,
        org: str | None = None,
        states: Iterable[JobState] = (),
        oldest_first: bool = False,
        limit: int | None = None,
        page_size: int = 100,
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        all_orgs: bool = False,
        unmatched: bool = False,
    ) -> Iterator[Job]:
        """See `Client.list`."""
        return self._iterate(
            self._client.list(
                org=org,
                states=states,
                oldest_first=oldest_first,
                limit=limit,
                page_size=page_size,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                all_orgs=all_orgs,
                unmatched=unmatched,
            )
        )

    def workers(self, *, org: str | None = None) -> builtins.list[WorkerInfo]:
        """See `Client.workers`."""
        return self._run(self._client.workers(org=org))

    def cancel(self, job_id: str) -> tuple[Job, CancelOutcome]:
        """See `Client.cancel`."""
        return self._run(self._client.cancel(job_id))

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """See `Client.wait`."""
        return self._run(self._client.wait(job_id, timeout=timeout))

    def result(self, job_id: str, *, timeout: float | None = None) -> Any:
        """See `Client.result`."""
        return self._run(self._client.result(job_id, timeout=timeout))

    def logs(self, job_id: str, *, follow: bool = False, after: int = 0) -> Iterator[LogLine]:
        """See `Client.logs`."""
        return self._iterate(self._client.logs(job_id, follow=follow, after=after))

    def events(
        self,
        *,
        org: str | None = None,
        topic_prefix: str = "",
        after: int = 0,
        follow: bool = False,
        from_end: bool = False,
    ) -> Iterator[Event]:
        """See `Client.events`."""
        return self._iterate(
            self._client.events(
                org=org, topic_prefix=topic_prefix, after=after, follow=follow, from_end=from_end
            )
        )

    def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        """See `Client.artifacts`."""
        return self._run(self._client.artifacts(job_id))

    def download(self, job_id: str, name: str, destination: Path) -> Artifact:
        """See `Client.download`."""
        return self._run(self._client.download(job_id, name, destination))


Run = Callable[[Coroutine[Any, Any, Any]], Any]


class _Blocking(Generic[A]):
    """The methods of an async object (`A`), each run to its end on the client's loop."""

    def __init__(self, run: Run, inner: A) -> None:
        self._run = run
        self._inner = inner


def _blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[_Blocking[A], P], T]:
    """The blocking form of an async method, with its signature and docstring."""

    @functools.wraps(method)
    def call(self: _Blocking[A], /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self._run(method(self._inner, *args, **kwargs))
        return result

    return call


class SyncTemplates(_Blocking[Templates]):
    """`Client.templates` without `await`."""

    create = _blocking(Templates.create)
    get = _blocking(Templates.get)
    list = _blocking(Templates.list)
    delete = _blocking(Templates.delete)
    submit = _blocking(Templates.submit)


class SyncSchedules(_Blocking[Schedules]):
    """`Client.schedules` without `await`."""

    create = _blocking(Schedules.create)
    update = _blocking(Schedules.update)
    get = _blocking(Schedules.get)
    list = _blocking(Schedules.list)
    delete = _blocking(Schedules.delete)
    pause = _blocking(Schedules.pause)
    resume = _blocking(Schedules.resume)
    trigger = _blocking(Schedules.trigger)


class SyncOrgs(_Blocking[Orgs]):
    """`Client.orgs` without `await`."""

    get = _blocking(Orgs.get)
    update = _blocking(Orgs.update)
    pause = _blocking(Orgs.pause)
    resume = _blocking(Orgs.resume)
