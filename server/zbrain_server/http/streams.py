"""Server-streaming RPCs on HTTP: WebSocket, newline-delimited JSON, downloads.

A server-streaming route (StreamEvents, StreamLogs) answers a WebSocket
handshake with a socket whose text frames are the canonical JSON of the
RPC's response messages; any other GET gets the same messages as
newline-delimited JSON (`application/x-ndjson`), which is what `curl -N`
follows. DownloadArtifact is the exception: its chunks go out as the raw
file.

A socket ends with a close code of 4000 + the google.rpc code of why it
ended (4008 RESOURCE_EXHAUSTED for a reader that fell behind, 4016 when its
token was revoked or its session ended, 4005 for an unknown job...), after a
last frame `{"error": <google.rpc.Status>}` with the details; 1000 when the
stream simply ended (a finished job's log). A reader that falls behind is
never buffered without bound: its events wait in bounded buffers (the bus
subscription, a feed's queue), and a frame the socket could not hand to the
network within ZBRAIN_STREAM_SEND_TIMEOUT_S ends it. Either way the close
reason names the sequence to resume from (`from=N`), which a new socket asks
for to get everything after it, once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import mimetypes
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

from aiohttp import WSMsgType, web
from google.protobuf.message import Message

from zbrain.errors import SLOW_SUBSCRIBER, ResourceExhaustedError, ZBrainError
from zbrain.v1 import event_pb2
from zbrain.v1 import job_service_pb2 as pb

from ..core.access import Caller
from ..rpc.auth import Authenticator, guard_stream
from . import codec

CLOSE_NORMAL = 1000
CLOSE_CODE_BASE = 4000  # + the google.rpc code
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
MAX_INCOMING_FRAME_BYTES = 4096  # a reader sends nothing but pings and the close
FRAME_INTERVAL_S = 0.25
"""A socket sends at most one frame per interval (each holding all that came
meanwhile): a browser sees changes within 250 ms, and the server's work per
watcher stays bounded however fast events come (bench: 100 watchers)."""
PACED_BELOW = 100
"""Frames of fewer items than this are paced by FRAME_INTERVAL_S; larger ones
are a backlog being caught up with, sent as fast as the reader takes them."""
CLOSE_GRACE_S = 5.0  # how long a closing socket's last frames may wait for the peer


class EventJson:
    """The canonical JSON of each event, encoded once for every reader.

    json_format takes about 100 µs for one small message, so a hundred
    sockets following the same events cannot each encode them: frames of
    events are assembled from this cache (keyed by the event's sequence,
    which names one event server-wide), bounded in bytes."""

    def __init__(self, max_bytes: int = 8 << 20) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._by_sequence: collections.OrderedDict[int, str] = collections.OrderedDict()

    def frame(self, message: Message) -> str:
        """A stream's response message as one frame's text."""
        if not isinstance(message, pb.StreamEventsResponse):
            return codec.to_json(message)
        if not message.events:
            return "{}"
        return '{"events": [' + ", ".join(map(self._event, message.events)) + "]}"

    def _event(self, event: event_pb2.Event) -> str:
        found = self._by_sequence.get(event.sequence)
        if found is None:
            found = self._by_sequence[event.sequence] = codec.to_json(event)
            self._bytes += len(found)
            while self._bytes > self._max_bytes and self._by_sequence:
                _, oldest = self._by_sequence.popitem(last=False)
                self._bytes -= len(oldest)
        return found


def _sequenced(message: Message) -> Sequence[Any]:
    """The items (events, log lines) of a stream's response message."""
    for field, value in message.ListFields():
        if (
            field.is_repeated
            and field.message_type is not None
            and "sequence" in field.message_type.fields_by_name
        ):
            return cast(Sequence[Any], value)
    return ()


def _items(message: Message) -> int:
    return len(_sequenced(message))


def last_sequence(message: Message) -> int | None:
    """The sequence of the last item (event or log line) of a stream's
    response message, or None when it carries none."""
    items = _sequenced(message)
    return int(items[-1].sequence) if items else None


class StreamContext:
    """What a streamed answer needs: who asks, and the registry that bounds
    and ends long-lived streams."""

    def __init__(
        self,
        auth: Authenticator,
        who: Caller,
        anonymous: bool,
        address: str,
        session: str,
        send_timeout_s: float,
        frames: EventJson,
    ) -> None:
        self.auth = auth
        self.who = who
        self.anonymous = anonymous
        self.address = address
        self.session = session
        self.send_timeout_s = send_timeout_s
        self.frames = frames

    @contextlib.asynccontextmanager
    async def messages(
        self, responses: AsyncIterator[Message]
    ) -> AsyncIterator[AsyncGenerator[Any, None]]:
        """The responses, counted as an open stream of the caller (bounded
        per client) and ended when its token is revoked or session ends."""
        stream = self.auth.open_stream(
            self.who, self.anonymous, self.address, worker=False, session=self.session
        )
        try:
            async with contextlib.aclosing(guard_stream(responses, stream)) as messages:
                yield messages
        finally:
            self.auth.close_stream(stream)


async def websocket(
    request: web.Request,
    source: AsyncGenerator[tuple[Message, bytes | None], None],
    context: StreamContext,
    after: int,
    open_sockets: set[web.WebSocketResponse],
) -> web.WebSocketResponse:
    """Serve a stream on a WebSocket until it ends, the reader leaves, or it
    must be cut off; `after` is the sequence the reader asked to start after.
    The socket is in `open_sockets` while it is open (the server closes them
    when it stops)."""
    socket = web.WebSocketResponse(
        # Frames are written as they come: compressing each one per reader
        # would cost the CPU that a hundred watchers need more.
        compress=False,
        heartbeat=30.0,
        max_msg_size=MAX_INCOMING_FRAME_BYTES,
    )
    await socket.prepare(request)
    open_sockets.add(socket)
    try:
        stream = context.auth.open_stream(
            context.who, context.anonymous, context.address, worker=False, session=context.session
        )
    except ZBrainError as error:
        await _close(request, socket, error)
        open_sockets.discard(socket)
        return socket
    # Three things may end the socket: the stream (its end, or a failure), the
    # reader leaving, the stream being ended from outside (a revoked token).
    # They are raced once for the socket's life, not once per frame: a
    # hundred watchers then cost little more than their writes.
    reader = asyncio.create_task(_drain_incoming(socket))
    sending = asyncio.create_task(_send_all(socket, source, context, after))
    try:
        await asyncio.wait((sending, reader, stream.ended), return_when=asyncio.FIRST_COMPLETED)
        ending: ZBrainError | None
        if sending.done():
            ending = sending.result()
        else:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            if not stream.ended.done():
                return socket  # the reader left
            ending = stream.ended.result()
        # The stream is let go of first: a reader cut off no longer counts
        # while its close waits for it.
        context.auth.close_stream(stream)
        if ending is None:
            await socket.close(code=CLOSE_NORMAL, message=b"end of stream")
        else:
            await _close(request, socket, ending)
    except ConnectionError:
        pass  # the reader left while its frame was written
    finally:
        context.auth.close_stream(stream)
        open_sockets.discard(socket)
        for task in (sending, reader):
            task.cancel()
        await asyncio.gather(sending, reader, return_exceptions=True)
    return socket


async def _send_all(
    socket: web.WebSocketResponse,
    source: AsyncGenerator[tuple[Message, bytes | None], None],
    context: StreamContext,
    sent: int,
) -> ZBrainError | None:
    """Send the stream's messages until it ends (None) or fails (the error
    to close with). A message comes with its frame's bytes when a feed
    encoded it for every socket; otherwise it is encoded here."""
    try:
        async with contextlib.aclosing(source) as messages:
            async for message, shared in messages:
                sequence = last_sequence(message)
                data = shared if shared is not None else context.frames.frame(message).encode()
                try:
                    async with asyncio.timeout(context.send_timeout_s):
                        await socket.send_frame(data, WSMsgType.TEXT)
                except TimeoutError:
                    # Only the wait for the network timed out: the frame is in the
                    # socket's buffer, the reader's to read before the close.
                    resume = sequence if sequence is not None else sent
                    return ResourceExhaustedError(
                        f"the reader took more than {context.send_timeout_s:g}s to take a "
                        f"frame; reconnect with from={resume}",
                        reason=SLOW_SUBSCRIBER,
                        metadata={"resume_after_sequence": str(resume)},
                    )
                if sequence is not None:
                    sent = sequence
                if shared is None and _items(message) < PACED_BELOW:
                    # What arrives meanwhile waits in the stream's bounded buffer
                    # and goes out together in the next frame (a feed paces itself).
                    await asyncio.sleep(FRAME_INTERVAL_S)
    except ZBrainError as error:
        return error
    return None


async def unshared(
    responses: AsyncGenerator[Message, None],
) -> AsyncGenerator[tuple[Message, bytes | None], None]:
    """A stream's own messages, as a socket's source (none shares its frames)."""
    async with contextlib.aclosing(responses):
        async for message in responses:
            yield message, None


async def _close(request: web.Request, socket: web.WebSocketResponse, error: ZBrainError) -> None:
    """A last frame with the error's google.rpc.Status, then the close frame
    (4000 + its code, a reason that fits); a peer that has not read them
    within CLOSE_GRACE_S (one that reads nothing at all) is disconnected."""
    reason = error.message
    resume = error.metadata.get("resume_after_sequence")
    if resume is not None:
        reason = f"slow reader: reconnect with from={resume}"
    encoded = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore").encode()
    frame = json.dumps({"error": json.loads(codec.error_json(error))})
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await socket.send_str(frame)
            await socket.close(code=CLOSE_CODE_BASE + error.code.value, message=encoded)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


async def _drain_incoming(socket: web.WebSocketResponse) -> None:
    """Read what the peer sends (pings, its close) until it closes or leaves;
    its text is ignored: a stream's socket only speaks."""
    async for message in socket:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


async def ndjson(
    request: web.Request, responses: AsyncIterator[Message], context: StreamContext
) -> web.StreamResponse:
    """Serve a stream as newline-delimited JSON. An error before the first
    message is the response's status; a later one is a last line
    `{"error": <google.rpc.Status>}`. A reader that does not take a line
    within the send timeout is disconnected (it resumes with `from=`, as a
    socket would)."""
    async with context.messages(responses) as messages:
        first = await anext(messages, None)  # a ZBrainError here is the answer's status
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson; charset=utf-8"}
        )
        await response.prepare(request)
        try:
            async with asyncio.timeout(None) as deadline:
                message = first
                while message is not None:
                    deadline.reschedule(asyncio.get_running_loop().time() + context.send_timeout_s)
                    await response.write(context.frames.frame(message).encode() + b"\n")
                    deadline.reschedule(None)
                    message = await anext(messages, None)
        except ZBrainError as error:
            line = json.dumps({"error": json.loads(codec.error_json(error))})
            with contextlib.suppress(ConnectionError):
                await response.write(line.encode() + b"\n")
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionError:
            return response  # the reader left
        await response.write_eof()
        return response


async def download(
    request: web.Request,
    responses: AsyncIterator[pb.DownloadArtifactResponse],
    context: StreamContext,
) -> web.StreamResponse:
    """An artifact as a file: its length, a type guessed from its name, and
    its SHA-256 as a strong ETag (a matching If-None-Match is answered 304)."""
    async with context.messages(responses) as messages:
        head = await anext(messages)
        artifact = head.artifact
        etag = f'"{artifact.sha256}"'
        headers = {
            "ETag": etag,
            "Content-Type": mimetypes.guess_type(artifact.name)[0] or "application/octet-stream",
            # Never rendered on the console's origin, whatever the job wrote.
            "Content-Disposition": "attachment; filename*=UTF-8''"
            + urllib.parse.quote(artifact.name.rsplit("/", 1)[-1]),
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-cache",
        }
        if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
            return web.Response(status=304, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = artifact.size_bytes
        await response.prepare(request)
        if request.method != "HEAD":
            async for part in messages:
                await response.write(part.chunk)
        await response.write_eof()
        return response


async def refuse_websocket(request: web.Request, error: ZBrainError) -> web.WebSocketResponse:
    """Answer a WebSocket handshake that cannot be served (no token, a bad
    parameter) with a socket closed at once with the error: a browser's
    WebSocket sees the close code and the frame, never an HTTP status."""
    socket = web.WebSocketResponse(compress=False, max_msg_size=MAX_INCOMING_FRAME_BYTES)
    await socket.prepare(request)
    await _close(request, socket, error)
    return socket
