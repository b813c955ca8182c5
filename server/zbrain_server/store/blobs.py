"""Content-addressed artifact blobs under ZBRAIN_ARTIFACTS.

A blob is stored once per distinct content, at `<root>/<sha[:2]>/<sha>`,
whatever job or name refers to it; names live only in the job store. Uploads
are written to a temporary file while hashed, checked against the checksum
and size the worker announced, then renamed into place, so a half-written or
corrupt blob is never visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from zbrain.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    StoreError,
    StoreFullError,
)

from ..core.model import Artifact

CHUNK_BYTES = 64 << 10
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(sha256: str, field: str = "sha256") -> str:
    if not _SHA256.match(sha256):
        raise InvalidArgumentError(
            "invalid checksum",
            violations=[FieldViolation(field, "must be 64 lower-case hex digits (SHA-256)")],
        )
    return sha256


class BlobStore:
    """Blobs on the local file system, named by their SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / "incoming"

    def open(self) -> None:
        try:
            self._incoming.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the artifact store {self.root}: {exc.strerror}"
            ) from exc
        # Uploads interrupted by a crash leave temporary files behind.
        for leftover in self._incoming.iterdir():
            leftover.unlink(missing_ok=True)

    def path_of(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    async def write(
        self, chunks: AsyncIterable[bytes], announced: Artifact, max_bytes: int
    ) -> Artifact:
        """Store a stream of chunks, verifying the announced size and checksum."""
        check_sha256(announced.sha256, "header.artifact.sha256")
        if announced.size_bytes > max_bytes:
            raise ResourceExhaustedError(
                f"artifact {announced.name!r} is {announced.size_bytes} bytes; "
                f"the limit per file is {max_bytes}"
            )
        try:
            return await self._write(chunks, announced)
        except OSError as exc:
            kind = StoreFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StoreError
            raise kind(f"cannot store artifact {announced.name!r}: {exc.strerror}") from exc

    async def _write(self, chunks: AsyncIterable[bytes], announced: Artifact) -> Artifact:
        digest = hashlib.sha256()
        size = 0
        fd, temp_name = tempfile.mkstemp(dir=self._incoming)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > announced.size_bytes:
                        raise InvalidArgumentError(
                            f"artifact {announced.name!r} is longer than its announced "
                            f"{announced.size_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                await asyncio.to_thread(_flush_and_sync, out)
            if size != announced.size_bytes:
                raise InvalidArgumentError(
                    f"artifact {announced.name!r} has {size} bytes, "
                    f"not the announced {announced.size_bytes}"
                )
            if digest.hexdigest() != announced.sha256:
                raise InvalidArgumentError(
                    f"artifact {announced.name!r} does not match its checksum: "
                    f"announced {announced.sha256}, received {digest.hexdigest()}"
                )
            final = self.path_of(announced.sha256)
            final.parent.mkdir(exist_ok=True)
            os.replace(temp, final)  # same content, same name: replacing is harmless
        finally:
            temp.unlink(missing_ok=True)
        return announced

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        """Yield a blob's content in chunks."""
        try:
            handle = self.path_of(sha256).open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError("artifact content is missing from the blob store") from exc
        with handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk

    def collect_garbage(self, referenced: set[str], min_age_s: float = 3600.0) -> int:
        """Delete blobs no artifact refers to; return how many were deleted.

        Blobs younger than min_age_s are kept: an upload stores its blob just
        before its artifact row, and must not be collected in between.
        """
        deleted = 0
        cutoff = time.time() - min_age_s
        for folder in self.root.iterdir():
            if folder == self._incoming or not folder.is_dir():
                continue
            for blob in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if blob.name not in referenced and blob.stat().st_mtime < cutoff:
                        blob.unlink()
                        deleted += 1
        return deleted


def _flush_and_sync(handle: object) -> None:
    handle.flush()  # type: ignore[attr-defined]
    os.fsync(handle.fileno())  # type: ignore[attr-defined]
