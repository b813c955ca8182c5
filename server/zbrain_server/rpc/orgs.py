"""zbrain.v1.OrgService's operations (see `api` for how operations are
defined and called): reading and changing an organisation's settings.

Reading needs a token of the org (or an admin's); changing needs an admin
(`auth.REQUIRED_ROLE`). A change is stored, then this replica's dispatcher
reads the settings again and runs a dispatch pass at once; other replicas
read them on their next tick (within a second), though the limits checked
in the lease transaction hold on every replica from the commit on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zbrain.v1 import org_pb2 as pb

from ..core.access import Caller, request_org
from ..core.limits import OrgSettings
from ..core.model import now_us
from ..store import JobStore
from . import codec, validation, validation_orgs

if TYPE_CHECKING:
    from .api import Api


class OrgApi:
    """Org settings: read, update, pause and resume."""

    def __init__(self, api: Api, store: JobStore) -> None:
        self._api = api
        self._store = store

    def _org(self, caller: Caller, requested: str) -> str:
        org_id = request_org(caller, requested, self._api.config.default_org)
        return validation.valid_org(org_id, "org_id")

    async def _changed(self, settings: OrgSettings) -> pb.OrgSettings:
        await self._api.jobs.settings_changed()
        return await self._shown(settings)

    async def _shown(self, settings: OrgSettings) -> pb.OrgSettings:
        """The settings with the org's storage usage beside them."""
        usage = await self._store.orgs.usage(settings.org_id)
        return codec.org_settings_to_proto(settings, usage)

    async def get_org_settings(
        self, caller: Caller, request: pb.GetOrgSettingsRequest
    ) -> pb.GetOrgSettingsResponse:
        settings = await self._store.orgs.get(self._org(caller, request.org_id))
        return pb.GetOrgSettingsResponse(settings=await self._shown(settings))

    async def update_org_settings(
        self, caller: Caller, request: pb.UpdateOrgSettingsRequest
    ) -> pb.UpdateOrgSettingsResponse:
        org_id = self._org(caller, request.org_id)
        changes = validation_orgs.settings_update(request)
        settings = await self._store.orgs.update(org_id, now_us(), changes)
        return pb.UpdateOrgSettingsResponse(settings=await self._changed(settings))

    async def pause_org(self, caller: Caller, request: pb.PauseOrgRequest) -> pb.PauseOrgResponse:
        org_id = self._org(caller, request.org_id)
        limits = self._api.config.limits
        selector = validation_orgs.selector(request.selector, request.HasField("selector"), limits)
        settings = await self._store.orgs.pause(org_id, now_us(), selector, paused=True)
        return pb.PauseOrgResponse(settings=await self._changed(settings))

    async def resume_org(
        self, caller: Caller, request: pb.ResumeOrgRequest
    ) -> pb.ResumeOrgResponse:
        org_id = self._org(caller, request.org_id)
        limits = self._api.config.limits
        selector = validation_orgs.selector(request.selector, request.HasField("selector"), limits)
        settings = await self._store.orgs.pause(org_id, now_us(), selector, paused=False)
        return pb.ResumeOrgResponse(settings=await self._changed(settings))
