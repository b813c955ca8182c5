"""Pages of lists, and answers cut to fit in one message.

The lists ordered by a unique text key (templates by name, schedules and
workers by id) are paged by that key: a page token is the key of the last
item a page gave (base64url, so that callers treat it as opaque), and the
next page starts after it, whatever was added or removed meanwhile. The
token carries no filter, unlike a job list's (`validation.list_query`),
whose pages depend on many more fields.

Any answer of many messages (those pages, a page of jobs, leases) is cut
short to fit in one gRPC message (`fitting`) rather than fail as too large.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from zbrain.errors import FieldViolation, InvalidArgumentError

from ..config import Limits
from . import validation

Item = TypeVar("Item")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Where a requested page starts and how long it may be."""

    after: str  # the key of the last item of the page before ("" for the first page)
    size: int  # at most this many items

    @property
    def read_limit(self) -> int:
        """How many items to read: one past the page says whether another follows."""
        return self.size + 1

    def answer(
        self,
        found: Sequence[Item],
        to_proto: Callable[[Item], M],
        key: Callable[[Item], str],
        max_bytes: int,
    ) -> tuple[list[M], str]:
        """The page of the items read after `after` (up to `read_limit`, in
        key order), cut short to fit in `max_bytes`, and the token of the
        page after it ("" when this is the last one)."""
        page = fitting([to_proto(item) for item in found[: self.size]], max_bytes)
        if len(found) <= len(page):
            return page, ""
        last = key(found[len(page) - 1])
        return page, base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def requested(
    page_size: int,
    page_token: str,
    limits: Limits,
    *,
    is_key: Callable[[str], bool] = lambda _: True,
) -> PageRequest:
    """The page a request asks for: a size of 0 means the default, and the
    limit caps it; a token must be one a previous page returned, decoding to
    a text `is_key` accepts (INVALID_ARGUMENT otherwise)."""
    size = validation.page_size(page_size, limits)
    if not page_token:
        return PageRequest("", size)
    try:
        after = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
    except (ValueError, binascii.Error):
        after = ""
    if not after or not is_key(after):
        raise InvalidArgumentError(
            "invalid page token",
            violations=[FieldViolation("page_token", "is not a token a previous page returned")],
        )
    return PageRequest(after, size)


def fitting(messages: Sequence[M], max_bytes: int) -> list[M]:
    """The first messages of an answer whose sizes fit in `max_bytes` (at
    least one): a page of large jobs, templates or schedules, or leases of
    large jobs, is cut short rather than failing as an answer past the
    message limit (a page's token then continues after the last one given)."""
    kept: list[M] = []
    left = max_bytes
    for message in messages:
        left -= message.ByteSize() + 8  # the field's tag and length
        if left < 0 and kept:
            break
        kept.append(message)
    return kept
