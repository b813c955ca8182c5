"""Browser sessions: a token exchanged once for a cookie, and CSRF protection.

A browser signs in with `POST /v1/session {"token": "..."}` and gets two
cookies: `zbrain_session` (HttpOnly, SameSite=Strict, Secure under TLS), which
stands for the token, and `zbrain_csrf` (readable by the page), whose value a
mutating request must repeat in the `X-ZBrain-CSRF` header (the double-submit
pattern; the value is also checked against the session, so a cookie planted
by a sibling origin does not pass). `DELETE /v1/session` forgets the session
at once. A session keeps the token itself, in this process only, and every
request authenticates it again, so a revoked token's sessions stop working at
their next request and their streams within a second (`Authenticator.recheck`).

Sessions live in the memory of the replica that made them: after a restart,
or behind a load balancer without affinity, the console signs in again.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "zbrain_session"
CSRF_COOKIE = "zbrain_csrf"
CSRF_HEADER = "X-ZBrain-CSRF"
SESSION_LIFETIME_S = 12 * 3600.0  # then the console signs in again
MAX_SESSIONS = 10_000  # past it the oldest session is forgotten


@dataclass(slots=True)
class Session:
    """One signed-in browser."""

    id: str
    authorization: str  # "Bearer <token>", authenticated again on every request
    token_id: str
    csrf: str
    expires_at: float  # time.monotonic()


class Sessions:
    """The signed-in browsers of this server, bounded in number and age."""

    def __init__(
        self, lifetime_s: float = SESSION_LIFETIME_S, max_sessions: int = MAX_SESSIONS
    ) -> None:
        self._lifetime_s = lifetime_s
        self._max_sessions = max_sessions
        self._by_id: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, authorization: str, token_id: str) -> Session:
        """A new session standing for a token the caller has just authenticated."""
        while len(self._by_id) >= self._max_sessions:
            self._by_id.popitem(last=False)
        session = Session(
            id=secrets.token_urlsafe(32),
            authorization=authorization,
            token_id=token_id,
            csrf=secrets.token_urlsafe(24),
            expires_at=time.monotonic() + self._lifetime_s,
        )
        self._by_id[session.id] = session
        return session

    def find(self, session_id: str) -> Session | None:
        """The live session of a cookie value, or None (unknown, signed out, expired)."""
        session = self._by_id.get(session_id)
        if session is not None and session.expires_at < time.monotonic():
            del self._by_id[session_id]
            return None
        return session

    def end(self, session_id: str) -> Session | None:
        """Forget a session (signing out); the ended session, if it existed."""
        return self._by_id.pop(session_id, None)


def csrf_matches(session: Session, header: str) -> bool:
    """Whether a request's X-ZBrain-CSRF header is its session's value."""
    return bool(header) and hmac.compare_digest(session.csrf.encode(), header.encode())
