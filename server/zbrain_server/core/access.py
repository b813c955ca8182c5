"""Who may act on which organisation: the checks every edge makes the same way.

A caller is bound to one organisation unless it is an admin (or auth is off).
A job of another organisation is answered exactly as a job that does not
exist, so its existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass

from zbrain.errors import NotFoundError, PermissionDeniedError

from .model import Role


@dataclass(frozen=True)
class Caller:
    """The authenticated identity of a call; org None means any org."""

    org_id: str | None
    role: Role
    token_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


ANONYMOUS_ADMIN = Caller(org_id=None, role=Role.ADMIN)
"""The caller of every call when auth is off."""


def request_org(caller: Caller, requested: str, default_org: str) -> str:
    """The org a request acts on: the one it names, else the caller's, else the default.

    A caller bound to one org may name only that org.
    """
    if not requested:
        return caller.org_id or default_org
    if caller.org_id is not None and requested != caller.org_id and not caller.is_admin:
        raise PermissionDeniedError(
            f"this token belongs to organisation {caller.org_id!r} and cannot act on {requested!r}"
        )
    return requested


def check_every_org(caller: Caller) -> None:
    """PermissionDeniedError unless the caller may act on every organisation at
    once (List's all_orgs): only a caller bound to none, an admin token or
    anyone while auth is off."""
    if caller.org_id is not None:
        raise PermissionDeniedError(
            f"this token belongs to organisation {caller.org_id!r}; "
            "listing every organisation needs an admin token"
        )


def request_orgs(caller: Caller, requested: list[str], default_org: str) -> list[str]:
    """`request_org` for a worker naming several orgs."""
    if not requested:
        return [request_org(caller, "", default_org)]
    return [request_org(caller, org, default_org) for org in requested]


def check_visible(caller: Caller, org_id: str, what: str) -> None:
    """NotFoundError unless the caller may see objects of `org_id` (as if absent)."""
    if caller.org_id is not None and org_id != caller.org_id:  # admins have no org bound
        raise NotFoundError(f"{what} not found")
