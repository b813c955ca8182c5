"""The content-addressed blob store and artifact name rules."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zbrain.errors import InvalidArgumentError, ResourceExhaustedError
from zbrain_server.config import Limits
from zbrain_server.core.model import Artifact
from zbrain_server.rpc.validation import artifact_name
from zbrain_server.store.blobs import BlobStore


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def announced(content: bytes, name: str = "a.txt") -> Artifact:
    return Artifact(name, hashlib.sha256(content).hexdigest(), len(content))


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "artifacts")
    store.open()
    return store


async def test_same_content_is_stored_once(blobs: BlobStore) -> None:
    await blobs.write(chunks(b"hel", b"lo"), announced(b"hello", "a.txt"), 1 << 20)
    await blobs.write(chunks(b"hello"), announced(b"hello", "b.txt"), 1 << 20)

    stored = [p for p in blobs.root.rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [hashlib.sha256(b"hello").hexdigest()]
    assert b"".join([c async for c in blobs.read(stored[0].name)]) == b"hello"


async def test_a_checksum_mismatch_stores_nothing(blobs: BlobStore) -> None:
    wrong = Artifact("a.txt", "0" * 64, 5)
    with pytest.raises(InvalidArgumentError, match="does not match its checksum"):
        await blobs.write(chunks(b"hello"), wrong, 1 << 20)
    assert not [p for p in blobs.root.rglob("*") if p.is_file()]


async def test_an_oversized_artifact_is_refused_before_reading(blobs: BlobStore) -> None:
    with pytest.raises(ResourceExhaustedError, match="limit per file is 4"):
        await blobs.write(chunks(b"hello"), announced(b"hello"), 4)


async def test_garbage_collection_keeps_referenced_and_young_blobs(blobs: BlobStore) -> None:
    for content in (b"keep", b"drop", b"young"):
        await blobs.write(chunks(content), announced(content), 1 << 20)
    old = time.time() - 7200
    for content in (b"keep", b"drop"):
        path = blobs.path_of(hashlib.sha256(content).hexdigest())
        os.utime(path, (old, old))

    deleted = blobs.collect_garbage({hashlib.sha256(b"keep").hexdigest()})

    assert deleted == 1
    remaining = {p.name for p in blobs.root.rglob("*") if p.is_file()}
    assert remaining == {hashlib.sha256(c).hexdigest() for c in (b"keep", b"young")}


@pytest.mark.parametrize(
    "name", ["", "../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a\x00b", "a\\b", "x" * 300]
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError):
        artifact_name(name, Limits())


@pytest.mark.parametrize("name", ["a.txt", "reports/q3.csv", "..hidden", "a..b"])
def test_relative_names_are_accepted(name: str) -> None:
    assert artifact_name(name, Limits()) == name
