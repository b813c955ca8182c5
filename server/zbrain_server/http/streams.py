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
never buffered without bound: the event bus holds a bounded backlog for it,
and a frame the socket could not hand to the network within
ZBRAIN_STREAM_SEND_TIMEOUT_S ends it. Either way the close reason names the sequence to
resume from (`from=N`), which a new socket asks for to get everything after
it, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf.message import Message

from zbrain.errors import SLOW_SUBSCRIBER, ResourceExhaustedError, ZBrainError
from zbrain.v1 import job_service_pb2 as pb

from ..core.access import Caller
from ..rpc.auth import Authenticator, guard_stream
from . import codec

CLOSE_NORMAL = 1000
CLOSE_CODE_BASE = 4000  # + the google.rpc code
SLOW_READER_CODE = CLOSE_CODE_BASE + 8  # RESOURCE_EXHAUSTED
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
MAX_INCOMING_FRAME_BYTES = 4096  # a reader sends nothing but pings and the close
REFUSAL_GRACE_S = 5.0  # how long a refused handshake's close may wait for the peer


def last_sequence(message: Message) -> int | None:
    """The sequence of the last item (event or log line) of a stream's
    response message, or None when it carries none."""
    for field, value in message.ListFields():
        items = field.message_type is not None and "sequence" in field.message_type.fields_by_name
        if items and field.is_repeated and value:
            return int(value[-1].sequence)
    return None


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
    ) -> None:
        self.auth = auth
        self.who = who
        self.anonymous = anonymous
        self.address = address
        self.session = session
        self.send_timeout_s = send_timeout_s

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
    responses: AsyncIterator[Message],
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
    reader = asyncio.create_task(_drain_incoming(socket))
    try:
        ending = await _send_all(socket, reader, responses, context, after)
        # The stream is let go of first: a reader cut off no longer counts
        # while its close waits for it.
        if ending is None:
            await socket.close(code=CLOSE_NORMAL, message=b"end of stream")
        else:
            await _close(request, socket, ending, context.send_timeout_s)
    except ConnectionError:
        pass  # the reader left
    finally:
        open_sockets.discard(socket)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return socket


async def _send_all(
    socket: web.WebSocketResponse,
    reader: asyncio.Task[None],
    responses: AsyncIterator[Message],
    context: StreamContext,
    sent: int,
) -> ZBrainError | None:
    """Send the stream's messages until it ends (None) or fails (the error
    to close with); ConnectionError when the reader leaves."""
    try:
        async with context.messages(responses) as messages:
            while True:
                step = asyncio.ensure_future(anext(messages))
                await asyncio.wait((step, reader), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    raise ConnectionResetError("the reader left")
                try:
                    message = step.result()
                except StopAsyncIteration:
                    return None
                sequence = last_sequence(message)
                try:
                    await asyncio.wait_for(
                        socket.send_str(codec.to_json(message)), context.send_timeout_s
                    )
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
    except ZBrainError as error:
        return error


async def _close(
    request: web.Request, socket: web.WebSocketResponse, error: ZBrainError, grace_s: float
) -> None:
    """A last frame with the error's google.rpc.Status, then the close frame
    (4000 + its code, a reason that fits). Both are written at once; a peer
    that has not read them within `grace_s` is disconnected."""
    reason = error.message
    resume = error.metadata.get("resume_after_sequence")
    if resume is not None:
        reason = f"slow reader: reconnect with from={resume}"
    encoded = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore").encode()
    frame = json.dumps({"error": json.loads(codec.error_json(error))})
    try:
        async with asyncio.timeout(grace_s):
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
    `{"error": <google.rpc.Status>}`."""
    async with context.messages(responses) as messages:
        first = await anext(messages, None)  # a ZBrainError here is the answer's status
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson; charset=utf-8"}
        )
        await response.prepare(request)
        try:
            message = first
            while message is not None:
                await response.write(codec.to_json(message).encode() + b"\n")
                message = await anext(messages, None)
        except ZBrainError as error:
            line = json.dumps({"error": json.loads(codec.error_json(error))})
            await response.write(line.encode() + b"\n")
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
    await _close(request, socket, error, REFUSAL_GRACE_S)
    return socket
