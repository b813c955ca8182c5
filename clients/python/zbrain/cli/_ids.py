"""Job ids as people type them: the full id in any case, or a short id.

Ids are UUIDv7, so recent jobs share their first characters (a timestamp);
their last characters are random. The short id is the last 8 of them
(`Job.short_id`): tables show it, and any command that takes an id accepts
it, or any other unique suffix of 6 characters or more. It is looked up
among the newest jobs of the organisation (SCAN_LIMIT of them), newest
first; an older job needs its full id.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from ..client import Client

MIN_SUFFIX = 6
SCAN_LIMIT = 10_000
SCAN_PAGE = 500
_FULL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX = re.compile(r"^[0-9a-f]+$")


def normalise(text: str) -> str | None:
    """The full id `text` spells (any case, with or without dashes), or None
    when it is not a whole id."""
    wanted = text.strip().lower()
    if _FULL.match(wanted):
        return wanted
    if len(wanted) == 32 and _HEX.match(wanted):
        return f"{wanted[:8]}-{wanted[8:12]}-{wanted[12:16]}-{wanted[16:20]}-{wanted[20:]}"
    return None


def is_suffix(text: str) -> bool:
    """Whether `text` can be a short id: 6 to 31 hex digits (dashes ignored)."""
    digits = text.strip().lower().replace("-", "")
    return MIN_SUFFIX <= len(digits) < 32 and bool(_HEX.match(digits))


async def resolve(client: Client, text: str, org: str | None = None) -> str:
    """The full id of the job `text` names (a full id or a short one).

    Text that is neither goes to the server unchanged, which says what is
    wrong with it. A suffix no recent job has is NotFoundError; one that two
    jobs share is InvalidArgumentError naming both.
    """
    full = normalise(text)
    if full is not None:
        return full
    if not is_suffix(text):
        return text.strip()
    digits = text.strip().lower().replace("-", "")
    found: list[str] = []
    seen = 0
    async for job in client.list(org=org, limit=SCAN_LIMIT, page_size=SCAN_PAGE):
        seen += 1
        if job.id.replace("-", "").endswith(digits):
            found.append(job.id)
        # Two jobs with one suffix are as likely anywhere, but checking the
        # page of the first match costs nothing more (it is already here).
        if found and seen % SCAN_PAGE == 0:
            break
    if not found:
        where = f"organisation {org}" if org else "your organisation"
        raise NotFoundError(
            f"no job among the newest {SCAN_LIMIT} of {where} has an id ending in {digits!r}; "
            "give the full id (zbrain list --json shows it), or --org for another organisation"
        )
    if len(found) > 1:
        raise InvalidArgumentError(
            f"the short id {digits!r} matches {len(found)} jobs ({', '.join(found)}); "
            "give more characters or the full id"
        )
    return found[0]
