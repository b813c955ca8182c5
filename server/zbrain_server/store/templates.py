"""`TemplateStore`: the versions of job templates (see `core.templates`)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import replace

from zbrain.errors import NotFoundError, StoreConflictError
from zbrain.models import ParameterType

from ..core.templates import Parameter, Template
from .driver import Driver
from .engine import Tx, WriteEngine
from .ops import Execute, FetchOne, Params, Program, Row


class TemplateStore:
    """Templates of every org, in the job store's database and transactions."""

    def __init__(self, driver: Driver, engine: WriteEngine) -> None:
        self._driver = driver
        self._engine = engine

    async def create(self, template: Template) -> Template:
        """Store a new version: 1 for a new name, one past the latest otherwise."""

        def program(tx: Tx) -> Program[Template]:
            latest = yield FetchOne(
                "latest_template", {"org_id": template.org_id, "name": template.name}
            )
            stored = replace(template, version=latest["version"] + 1 if latest else 1)
            if not (yield Execute("insert_template", _params(stored))):
                raise StoreConflictError(f"template {template.name!r} changed concurrently")
            return stored

        return await self._engine.write(program)

    async def get(self, org_id: str, name: str, version: int = 0) -> Template:
        """One version (0: the latest); NotFoundError naming what is missing."""
        if version:
            params = {"org_id": org_id, "name": name, "version": version}
            row = await self._driver.fetch_one("select_template", params)
        else:
            row = await self._driver.fetch_one("latest_template", {"org_id": org_id, "name": name})
        if row is None:
            which = f"version {version} of template" if version else "template"
            raise NotFoundError(f"there is no {which} {name!r} in organisation {org_id!r}")
        return _template(row)

    async def list(self, org_id: str, after_name: str, limit: int) -> builtins.list[Template]:
        """The latest version of each template named after `after_name`, by name."""
        rows = await self._driver.fetch(
            "list_templates", {"org_id": org_id, "after": after_name, "limit": limit}
        )
        return [_template(row) for row in rows]

    async def delete(self, org_id: str, name: str) -> int:
        """Delete every version of a template; how many (NotFoundError for none)."""

        def program(tx: Tx) -> Program[int]:
            deleted: int = yield Execute("delete_template", {"org_id": org_id, "name": name})
            if not deleted:
                raise NotFoundError(f"there is no template {name!r} in organisation {org_id!r}")
            return deleted

        return await self._engine.write(program)


def _params(template: Template) -> Params:
    return {
        "org_id": template.org_id,
        "name": template.name,
        "version": template.version,
        "job_spec": template.job_spec,
        "parameters": _parameters_json(template.parameters),
        "description": template.description,
        "create_time": template.create_time_us,
    }


def _parameters_json(parameters: Sequence[Parameter]) -> str:
    return json.dumps(
        [
            {
                "name": p.name,
                "type": p.type.name,
                "required": p.required,
                "default_json": p.default_json,
                "description": p.description,
            }
            for p in parameters
        ]
    )


def _template(row: Row) -> Template:
    return Template(
        org_id=row["org_id"],
        name=row["name"],
        version=row["version"],
        job_spec=bytes(row["job_spec"]),
        parameters=tuple(
            Parameter(
                entry["name"],
                ParameterType[entry["type"]],
                entry["required"],
                entry["default_json"],
                entry["description"],
            )
            for entry in json.loads(row["parameters"])
        ),
        description=row["description"],
        create_time_us=row["create_time"],
    )
