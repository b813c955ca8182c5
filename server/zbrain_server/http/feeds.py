"""Live events read once and framed once for every socket that follows them.

A hundred browsers watching the same organisation's events must not cost a
hundred times the work of one: each would decode every event, build its
message and encode its JSON (json_format takes about 100 µs a message).
So sockets that follow the live events of one organisation under one topic
prefix share a `Feed`: one StreamEvents operation (`rpc.api`, with its
bounded subscription to the bus) whose messages are turned into frame bytes
once and handed to each socket's `Follower`, a queue bounded in bytes (the
frames are shared, so a slow socket holds at most that much more).

A socket joins without a gap or a duplicate: it first replays the stored
events after its own `from`, at its own pace (with its own caller, so
organisation checks and retention errors are its own); then it registers
with the feed, so every frame the feed sends from then on is queued for it,
replays what the feed had sent before (committed meanwhile: rarely more
than a frame), and takes the queued frames, skipping what it already has.
A feed starts where its first socket's replay ended, so it never carries a
backlog that its sockets would have to take at its pace. A socket
whose queue overflows is cut off, told to resume after the last event it
was sent, like any slow reader.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import cast

from google.protobuf.message import Message

from zbrain.errors import SLOW_SUBSCRIBER, ResourceExhaustedError, ZBrainError
from zbrain.v1 import job_service_pb2 as pb

from ..core.access import ANONYMOUS_ADMIN, Caller
from ..rpc.api import Api
from .streams import PACED_BELOW

Frame = tuple[pb.StreamEventsResponse, bytes]
"""A message of the stream and its frame's bytes, encoded once for all."""


class Follower:
    """One socket's queue of a feed's frames, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._frames: collections.deque[Frame] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.failure: ZBrainError | None = None  # the feed failed, or this follower fell behind
        self.overflowed = False

    def offer(self, frame: Frame) -> None:
        if self.failure is not None or self.overflowed:
            return
        # One frame is always taken (it is at most ZBRAIN_MAX_STREAM_MESSAGE_BYTES).
        if self._frames and self._bytes + len(frame[1]) > self._max_bytes:
            self.overflowed = True
            self._frames.clear()
            self._bytes = 0
        else:
            self._frames.append(frame)
            self._bytes += len(frame[1])
        self._ready.set()

    def fail(self, error: ZBrainError) -> None:
        self.failure = error
        self._ready.set()

    async def take(self) -> list[Frame]:
        """The frames queued since the last take, waiting for one if none is."""
        await self._ready.wait()
        self._ready.clear()
        frames = list(self._frames)
        self._frames.clear()
        self._bytes = 0
        return frames


class Feed:
    """The live events of one organisation under one topic prefix, read once."""

    def __init__(
        self,
        api: Api,
        org_id: str,
        topic_prefix: str,
        after: int,
        encode: Callable[[Message], str],
        interval_s: float,
    ) -> None:
        self.position = after  # the last sequence handed to the followers
        self.followers: set[Follower] = set()
        request = pb.StreamEventsRequest(
            org_id=org_id, topic_prefix=topic_prefix, after_sequence=after, follow=True
        )
        self._task = asyncio.create_task(self._run(api, request, encode, interval_s))

    @property
    def failed(self) -> bool:
        return self._task.done()

    async def _run(
        self,
        api: Api,
        request: pb.StreamEventsRequest,
        encode: Callable[[Message], str],
        interval_s: float,
    ) -> None:
        try:
            # The server's own reader: the organisation was checked for each
            # follower's caller before it joined.
            async for response in api.stream_events(ANONYMOUS_ADMIN, request):
                if not response.events:
                    continue
                frame = (response, encode(response).encode())
                for follower in self.followers:
                    follower.offer(frame)
                self.position = response.events[-1].sequence
                if len(response.events) < PACED_BELOW:
                    # Live: what commits meanwhile waits in the feed's bounded
                    # subscription and goes out together, one frame per interval.
                    await asyncio.sleep(interval_s)
        except ZBrainError as error:
            for follower in self.followers:
                follower.fail(error)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Feeds:
    """The feeds of one server, by (organisation, topic prefix); a feed lives
    while a socket follows it."""

    def __init__(
        self,
        api: Api,
        encode: Callable[[Message], str],
        follower_bytes: int,
        interval_s: float,
    ) -> None:
        self._api = api
        self._encode = encode
        self._follower_bytes = follower_bytes
        self._interval_s = interval_s
        self._feeds: dict[tuple[str, str], Feed] = {}

    async def follow(
        self, caller: Caller, request: pb.StreamEventsRequest
    ) -> AsyncGenerator[tuple[pb.StreamEventsResponse, bytes | None], None]:
        """The events `request` asks for, then live ones, as StreamEvents
        answers them (`follow` set), each with its frame's bytes when shared."""
        org_id = self._api.events_org(caller, request)
        key = (org_id, request.topic_prefix)
        sent = request.after_sequence
        # The stored events first, at this socket's own pace (a page when it
        # has taken the last): a feed only ever carries what is new.
        stored = self._replay(caller, org_id, request.topic_prefix, sent, None)
        async with contextlib.aclosing(stored):
            async for response in stored:
                yield response, None
                sent = response.events[-1].sequence
        feed = self._feeds.get(key)
        if feed is None or feed.failed:
            feed = self._feeds[key] = Feed(
                self._api, org_id, request.topic_prefix, sent, self._encode, self._interval_s
            )
        follower = Follower(self._follower_bytes)
        feed.followers.add(follower)
        try:
            # What the feed sent before this socket joined (committed while it
            # replayed: rarely more than a frame).
            caught_up = feed.position
            missed = self._replay(caller, org_id, request.topic_prefix, sent, caught_up)
            async with contextlib.aclosing(missed):
                async for response in missed:
                    yield response, None
                    sent = response.events[-1].sequence
            sent = max(sent, caught_up)
            while True:
                frames = await follower.take()
                if follower.failure is not None:
                    raise _for_follower(follower.failure, sent)
                if follower.overflowed:
                    raise _too_slow(sent)
                for response, data in frames:
                    if response.events[-1].sequence <= sent:
                        continue
                    if response.events[0].sequence <= sent:  # joined mid-frame
                        events = [e for e in response.events if e.sequence > sent]
                        yield pb.StreamEventsResponse(events=events), None
                    else:
                        yield response, data
                    sent = response.events[-1].sequence
        finally:
            feed.followers.discard(follower)
            if not feed.followers:
                if self._feeds.get(key) is feed:
                    del self._feeds[key]
                await feed.stop()

    async def _replay(
        self, caller: Caller, org_id: str, topic_prefix: str, after: int, through: int | None
    ) -> AsyncGenerator[pb.StreamEventsResponse, None]:
        """The stored events after `after` (through `through`, if given), read
        with the socket's own caller: its organisation checks and retention
        errors are its own."""
        if through is not None and after >= through:
            return
        request = pb.StreamEventsRequest(
            org_id=org_id, topic_prefix=topic_prefix, after_sequence=after, follow=False
        )
        responses = cast(
            AsyncGenerator[pb.StreamEventsResponse, None],
            self._api.stream_events(caller, request),  # an async generator
        )
        async with contextlib.aclosing(responses) as stored:
            async for response in stored:
                events = [e for e in response.events if through is None or e.sequence <= through]
                if len(events) == len(response.events):
                    yield response
                    continue
                if events:
                    yield pb.StreamEventsResponse(events=events)
                return

    async def stop(self) -> None:
        for feed in list(self._feeds.values()):
            await feed.stop()
        self._feeds.clear()


def _too_slow(sent: int) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"subscriber too slow: its frames waiting to be sent passed the buffer "
        f"(ZBRAIN_EVENT_BUFFER_BYTES); resume with after_sequence={sent}",
        reason=SLOW_SUBSCRIBER,
        metadata={"resume_after_sequence": str(sent)},
    )


def _for_follower(error: ZBrainError, sent: int) -> ZBrainError:
    """The feed's failure as one follower must hear it: a slow feed (its own
    subscription overflowed) resumes each follower from its own place."""
    return _too_slow(sent) if error.reason == SLOW_SUBSCRIBER else error
