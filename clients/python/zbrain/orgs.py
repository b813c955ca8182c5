"""Organisation settings through zbrain.v1.OrgService: `client.orgs`.

Reading needs a token of the organisation; changing, pausing and resuming
need an admin token (docs/limits.md says what each limit does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import _convert
from .errors import FieldViolation, InvalidArgumentError
from .models import OrgSettings
from .v1 import org_pb2, org_pb2_grpc

if TYPE_CHECKING:
    from .client import Client


class Orgs:
    """An organisation's limits, quotas and pauses."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = org_pb2_grpc.OrgServiceStub(client.channel)

    async def get(self, org: str | None = None) -> OrgSettings:
        """The settings of `org` (default: the token's organisation)."""
        request = org_pb2.GetOrgSettingsRequest(org_id=org or "")
        response = await self._client._call(
            self._stub.GetOrgSettings(request, timeout=self._client.timeout)
        )
        return _convert.org_settings(response.settings)

    async def update(
        self,
        org: str,
        *,
        max_running_jobs: int | None = None,
        max_starts_per_second: float | None = None,
        max_waiting_jobs: int | None = None,
        max_log_bytes: int | None = None,
        max_artifact_bytes: int | None = None,
        retention_days: int | None = None,
    ) -> OrgSettings:
        """Set the limits given (0 removes the org's own), keeping the others;
        InvalidArgumentError naming a value its field cannot hold."""
        limits = {
            "max_running_jobs": max_running_jobs,
            "max_starts_per_second": max_starts_per_second,
            "max_waiting_jobs": max_waiting_jobs,
            "max_log_bytes": max_log_bytes,
            "max_artifact_bytes": max_artifact_bytes,
            "retention_days": retention_days,
        }
        request = org_pb2.UpdateOrgSettingsRequest(org_id=org)
        for name, value in limits.items():
            if value is None:
                continue
            try:
                setattr(request, name, value)
            except (TypeError, ValueError) as exc:  # protobuf's range and type checks
                raise InvalidArgumentError(
                    "invalid organisation settings",
                    violations=[FieldViolation(name, f"cannot hold {value!r} ({exc})")],
                ) from None
        response = await self._client._call(
            self._stub.UpdateOrgSettings(request, timeout=self._client.timeout)
        )
        return _convert.org_settings(response.settings)

    async def pause(self, org: str, selector: Mapping[str, str] | None = None) -> OrgSettings:
        """Start no more jobs of `org`, or of its jobs whose labels hold every
        pair of `selector`; running jobs finish, submits are accepted."""
        request = org_pb2.PauseOrgRequest(org_id=org, selector=_selector(selector))
        response = await self._client._call(
            self._stub.PauseOrg(request, timeout=self._client.timeout)
        )
        return _convert.org_settings(response.settings)

    async def resume(self, org: str, selector: Mapping[str, str] | None = None) -> OrgSettings:
        """Lift the pause of `org`, or of one selector as it was paused."""
        request = org_pb2.ResumeOrgRequest(org_id=org, selector=_selector(selector))
        response = await self._client._call(
            self._stub.ResumeOrg(request, timeout=self._client.timeout)
        )
        return _convert.org_settings(response.settings)


def _selector(labels: Mapping[str, str] | None) -> org_pb2.LabelSelector | None:
    """The selector of a pause or resume; None (the whole org) only when none
    is given: an empty mapping is sent as a selector, which the server refuses
    by name, rather than widening the call to the whole organisation."""
    return None if labels is None else org_pb2.LabelSelector(labels=labels)
